package keys

import "github.com/tapline/tapline/proto"

// batch is one message: whole, checked key lines from one byte range of
// one file, each ending in "\n".
type batch struct {
	id    string // Nats-Msg-Id
	data  []byte
	lines int
}

// msgID names a batch for JetStream's duplicate detection
// (proto.KeysMsgID): the source, the file's identity (device and inode, or
// the run's nonce for a stream), the byte range and a hash of the
// content. A retried publish has the same id and is stored once.
func msgID(source, file string, start, end int64, data []byte) string {
	return proto.KeysMsgID(source, file, start, end, data)
}
