package replay

import (
	"strings"

	"github.com/tapline/tapline/proto"
)

// credentialsRemovedReason starts the summary reason of a connection
// dialed without production credentials that --forward-credentials asked
// for, because reassemble did not store them.
const credentialsRemovedReason = "credentials not forwarded: reassemble stored none (run it with --keep-credentials)"

// credentialsRemoved returns, when --forward-credentials asks for
// production's credentials but reassemble removed them from open (it runs
// without --keep-credentials), what the connection's summary result says;
// the first time it also logs one line. The connection is dialed without
// them: a placeholder is never sent as if it were the credential.
func (r *runner) credentialsRemoved(open *proto.OpenEvent) string {
	if open == nil || !r.cfg.ForwardCreds {
		return ""
	}
	var names []string
	if r.cfg.ForwardHdrs {
		names = append(names, open.RedactedHeaders...)
	}
	if r.cfg.PathOverride == "" {
		for _, q := range open.RedactedQuery {
			names = append(names, "?"+q)
		}
	}
	if len(names) == 0 {
		return ""
	}
	list := strings.Join(names, ", ")
	r.credsWarn.Do(func() {
		r.log.Warn("--forward-credentials: reassemble removed production's credentials from the open events (it runs without --keep-credentials); connections are dialed without them and their summary results say so",
			"example_conn", open.Conn, "removed", list)
	})
	return credentialsRemovedReason + ": " + list
}
