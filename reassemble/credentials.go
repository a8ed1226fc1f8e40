package reassemble

import (
	"github.com/tapline/tapline/proto"
	"github.com/tapline/tapline/proto/redact"
)

// stripCredentials removes production's credentials from an open event
// before it is stored: the upgrade request headers whose names look like
// credentials (Authorization, Proxy-Authorization, Cookie, X-Api-Key, …
// and --redact-names) and such query parameters of the path. Their names
// stay in RedactedHeaders and RedactedQuery, so replay can say what it
// could not forward. Removing (rather than masking) means no reader, old
// or new, can ever send a placeholder as if it were the credential.
func stripCredentials(ev *proto.OpenEvent) {
	ev.Headers, ev.RedactedHeaders = redact.StripHeaders(ev.Headers)
	ev.Path, ev.RedactedQuery = redact.StripQuery(ev.Path)
}
