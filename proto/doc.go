// Package proto is Tapline's wire contract: the JetStream stream and subject
// names, the NATS header names of reassembled messages, the connection event
// bodies, and the idempotent provisioning of the streams.
//
// Every stage imports this package and nothing else of another stage. The
// contract is specified for subscribers in other languages in README.md in
// this directory; Version names the revision of that specification.
//
// Sub-packages:
//   - framebatch: the pcapng encoding of a batch of decapsulated frames.
//   - flow: the inner 5-tuple of a frame and its symmetric shard hash.
//   - stage: flags, environment, logging, NATS connection, /healthz and
//     /metrics wiring shared by every binary.
//   - natstest: an embedded JetStream server for tests and the local default.
package proto

// Version is the revision of the wire contract described in README.md. It is
// sent as the Tapline-Version header on every published message.
const Version = "1"
