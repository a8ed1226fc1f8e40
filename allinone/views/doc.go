// Package views holds the user's views of a running Tapline deployment,
// read from its NATS JetStream streams with ordered (ephemeral)
// consumers, so they leave nothing behind on the server:
//
//   - `tapline watch`: a live terminal view of the connections (or one line
//     per change with --plain or when stdout is not a terminal);
//   - `tapline report`: the loss report of a time window, per connection
//     and in total, next to the mirror's own drop counters (--json);
//   - `tapline sub`: the messages of any tapline subject, headers readable,
//     data bodies summarised, from what the stream holds and then live.
//
// The messages stream is decoded by ledger.ParseEntry, the parser the
// ledger uses; Table folds its entries and the replay results into one
// row per connection.
package views
