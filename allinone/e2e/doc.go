// Package e2e holds Tapline's end-to-end tests in the kernel mirror lab
// (proto/mirrorlab): an external WebSocket server in the ext namespace
// talks to a production client in prod, the kernel mirrors prod's
// interface as VXLAN to the target namespace, and the four stage binaries
// (decap, reassemble, replay, archive) run there as separate processes
// against a JetStream server (the helper command natsd) in the same
// namespace. The test process reaches NATS, the stages' /healthz and the
// replay listen address with sockets created inside the target namespace.
//
// The tests need root, ip and tc (they skip otherwise); the binaries are
// built once by TestMain.
package e2e
