package replay

// SinkHeader is the handshake response header by which a test system says
// it never answers (value "sink"), as `tapline testsystem` does. Replay
// then does not compare that connection's responses: with nothing to
// compare, "no response from the test system" would be reported for every
// production response. Its summary says why (result "sent").
const SinkHeader = "Tapline-Test-System"

// sinkNotCompared is the summary reason of a connection to a sink.
const sinkNotCompared = "not compared: the test system announced itself as a sink that never answers (" + SinkHeader + ": sink)"
