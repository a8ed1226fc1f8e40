package keys

import (
	"fmt"
	"hash/fnv"
)

// batch is one message: whole, checked key lines from one byte range of
// one file, each ending in "\n".
type batch struct {
	id    string // Nats-Msg-Id
	data  []byte
	lines int
}

// msgID names a batch for JetStream's duplicate detection: the source, the
// file's identity (device and inode, or the run's nonce for a stream), the
// byte range and a hash of the content. A retried publish has the same id
// and is stored once; two batches with the same id hold the same lines, so
// deduplication can never drop a line that was not stored.
func msgID(source, file string, start, end int64, data []byte) string {
	h := fnv.New64a()
	_, _ = h.Write(data)
	return fmt.Sprintf("keys:%s:%s:%d-%d:%016x", source, file, start, end, h.Sum64())
}
