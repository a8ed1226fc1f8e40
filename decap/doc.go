// Package decap is Tapline's first stage: it receives the VXLAN (UDP 4789)
// and GENEVE (UDP 6081) copy of production traffic that AWS VPC Traffic
// Mirroring or a Gateway Load Balancer sends, or reads a pcap/pcapng file,
// decapsulates the inner frames, shards them by the symmetric flow hash and
// publishes them as frame batches to JetStream on
// tapline.frames.<vni>.<shard> (see proto/README.md).
//
// Run is the engine; ReadCapture gives the frames decap would publish for a
// capture file without NATS. The sub-packages do one thing each: vxlan and
// geneve parse headers, decode turns datagrams and captured frames into
// inner frames and counts, shard assigns shards, batch builds batches,
// publish sends them to JetStream, capture reads files and send
// re-encapsulates a capture for `decap send`.
package decap
