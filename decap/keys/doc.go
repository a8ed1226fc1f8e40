// Package keys is `decap keys`: the small companion that runs on the
// production host and ships TLS session secrets, written by the production
// process in the NSS key log format (SSLKEYLOGFILE, Go's
// tls.Config.KeyLogWriter), to the JetStream stream TAPLINE_KEYS on
// tapline.keys.<source>, for reassemble to decrypt the mirrored TLS
// connections with.
//
// It reads a file or stdin once (and exits 0 when every line is stored), or
// follows a file across rename rotation and copytruncate. Lines are batched,
// each message holding whole lines; every message carries a Nats-Msg-Id
// derived from the file's identity, the byte range and a hash of the
// content, so a retried publish is stored once and a different content is
// never taken for a duplicate. Lines are secrets: they are counted, never
// logged; a malformed line is reported by its line number only.
package keys
