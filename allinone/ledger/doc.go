// Package ledger checks Tapline's promise end to end: for every connection
// and direction, every message production received reaches the test system
// byte-identical, or is flagged with why (Tapline-Reason), or is reported
// lost; nothing is delivered twice; nothing is delivered that production
// never sent; the loss report is true.
//
// A reconciliation takes four inputs:
//
//   - Production: what production received, per connection (client and
//     server ip:port) and direction, in order (opcode, size, SHA-256);
//   - Stream: what TAPLINE_MSGS holds (open, gap and close events and the
//     data chunks with their completeness headers), built with Stream.Add
//     or read with ReadStream;
//   - Results: what replay published on TAPLINE_RESULTS (AddResult);
//   - Deliveries: what the test system received, complete or aborted.
//
// Reconcile returns a Report: the figures (messages exact, flagged by
// reason, reported lost; bytes reported missing against the bounds of what
// the mirror dropped) and every Violation, naming the connection, the
// direction and the production message index. Messages of a TLS
// connection missing from the stream while its close event reports the
// direction's records undecryptable (keys never came) are counted as
// Undecryptable: reported by the TLS record account, not lost silently. An exact message the test
// system did not receive is no violation only when replay's last result
// for it says so explicitly: in-doubt (written, never confirmed, not sent
// again); the Report counts those in InDoubt.
package ledger
