package proto

import (
	"fmt"
	"hash/fnv"
	"strconv"
)

// The Nats-Msg-Id formats of the producers. JetStream stores a message
// once per id within the stream's duplicate window, so a format must never
// change while stored data may be sent again: a record spooled under one
// format and resent under another would be stored twice.

// SeqMsgID is the id of message seq of a numbered sequence named prefix:
// "<prefix>-<seq>". decap names its frame batches with a nonce per run as
// prefix, `decap capture` its spool records with the spool's instance id
// (kept in the spool directory, so a record resent after a restart has
// the same id).
func SeqMsgID(prefix string, seq uint64) string {
	return prefix + "-" + strconv.FormatUint(seq, 10)
}

// KeysMsgID is the id of a message of TLS key log lines:
// "keys:<source>:<file>:<start>-<end>:<FNV-64a of data, 16 hex digits>",
// file being the key log's identity (device and inode, or a run's nonce
// for a pipe) and start-end its byte range. Two messages with the same id
// hold the same lines, so deduplication never drops a line not stored.
func KeysMsgID(source, file string, start, end int64, data []byte) string {
	h := fnv.New64a()
	_, _ = h.Write(data)
	return fmt.Sprintf("keys:%s:%s:%d-%d:%016x", source, file, start, end, h.Sum64())
}
