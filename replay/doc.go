// Package replay is the replay stage of Tapline: it consumes the messages
// stream (TAPLINE_MSGS) and reproduces the production conversations against
// a test system, connection by connection, in dial mode (replay is the
// client) or listen mode (replay stands in for the external systems the
// production client connected to), and publishes what happened on the
// results stream (TAPLINE_RESULTS). See README.md.
package replay
