// Package e2e holds Tapline's end-to-end tests in the kernel mirror lab
// (proto/mirrorlab): an external WebSocket server in the ext namespace
// talks to a production client in prod, the kernel mirrors prod's
// interface as VXLAN to the target namespace, and the four stage binaries
// (decap, reassemble, replay, archive) run there as separate processes
// against a JetStream server (the helper command natsd) in the same
// namespace. The test process reaches NATS, the stages' /healthz and the
// replay listen address with sockets created inside the target namespace.
//
// Every test ends with the ledger (package allinone/ledger, through
// Pipeline.Ledger): once the pipeline is quiescent, each message production
// received is exact at the test system once, flagged with a reason or
// reported lost, and the loss report lies within what the mirror path
// dropped. TestSoak is the production-like soak (TAPLINE_SOAK_DURATION,
// TAPLINE_SOAK_SEED; `make soak DURATION=30m`).
//
// The tests need root, ip and tc (they skip otherwise, and fail with
// TAPLINE_REQUIRE_LAB=1); the binaries are built once by TestMain.
package e2e
