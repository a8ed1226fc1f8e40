package message

import (
	"encoding/json"

	"github.com/tapline/tapline/proto"
	"github.com/tapline/tapline/reassemble/message/httpup"
	"github.com/tapline/tapline/reassemble/message/pmd"
)

// Resume describes the connection a new Decoder continues: one the TCP
// layer closed (idle, evicted from a full connection table, or after a
// sequence jump) whose packets came back on the same 5-tuple. Its later
// bytes are then decoded as what they are — WebSocket frames of a known
// handshake — never as raw TCP, so they come out exact or flagged.
type Resume struct {
	// Conn is the id of the connection continued.
	Conn string
	// Contiguous is set by the caller per direction (0 c2s, 1 s2c): the
	// TCP stream continues the predecessor's exactly where it stopped
	// (lost bytes in between are reported with Gap).
	Contiguous [2]bool

	ws       bool // the predecessor was a WebSocket
	tcp      bool // the predecessor had settled on raw TCP
	dirKnown bool
	req      *httpup.Message
	resp     *httpup.Message
	pmd      pmd.Params
	pmdKnown bool
	boundary [2]bool // by direction: stopped between frames, no message open, in sync
}

// Snapshot returns what a connection continuing the one dec decodes needs,
// taken before dec.Close; nil when dec is not this package's decoder or
// the protocol was not known yet.
func Snapshot(dec Decoder, conn string) *Resume {
	d, ok := dec.(*decoder)
	if !ok || d.proto == protoUnknown {
		return nil
	}
	r := &Resume{Conn: conn, ws: d.proto == protoWS, tcp: d.proto == protoTCP, dirKnown: d.dirKnown,
		req: d.req, resp: d.resp, pmd: d.pmd, pmdKnown: d.pmdKnown}
	for i, s := range d.sides {
		r.boundary[i] = s.mode == modeWS && !s.inFrame && s.fhn == 0 && !s.msgOpen && !s.lostSync
	}
	return r
}

// WebSocket reports whether the connection continued was a WebSocket.
func (r *Resume) WebSocket() bool { return r.ws }

// applyResume sets up a new decoder that continues r: a WebSocket keeps
// its handshake (so the open event has its path and headers, and
// permessage-deflate its parameters) and each direction parses frames at
// once where its stream continues exactly from a frame boundary, else
// hunts for one (never settling on raw TCP); a raw TCP connection stays
// raw TCP.
func (d *decoder) applyResume(r *Resume) {
	switch {
	case r.tcp:
		d.proto = protoTCP
		for _, s := range d.sides {
			s.mode = modeTCP
			s.hunt = hunter{}
		}
		return
	case !r.ws:
		return
	}
	d.proto = protoWS
	d.req, d.resp, d.pmd, d.pmdKnown = r.req, r.resp, r.pmd, r.pmdKnown
	d.dirKnown = d.dirKnown || r.dirKnown
	for i, s := range d.sides {
		if r.boundary[i] && r.Contiguous[i] {
			s.mode = modeWS
			s.hunt = hunter{}
			s.lostSync = false
			s.stats.Resyncs = 0
		} else if s.mode != modeHunt {
			s.startHunt(true)
		}
	}
}

// resumeOpen marks the open event of a continuing connection: mid-stream
// (its own start was not seen), and which connection it continues.
func (d *decoder) resumeOpen(ev *proto.OpenEvent) {
	if r := d.meta.Resume; r != nil {
		ev.MidStream = true
		ev.Resumes = r.Conn
	}
}

// resumeJSON is a Resume as kept in a record another instance reads (the
// caller's Contiguous is not part of it).
type resumeJSON struct {
	Conn     string          `json:"conn"`
	WS       bool            `json:"ws,omitempty"`
	TCP      bool            `json:"tcp,omitempty"`
	DirKnown bool            `json:"dir_known,omitempty"`
	Req      *httpup.Message `json:"req,omitempty"`
	Resp     *httpup.Message `json:"resp,omitempty"`
	PMD      pmd.Params      `json:"pmd"`
	PMDKnown bool            `json:"pmd_known,omitempty"`
	Boundary [2]bool         `json:"boundary"`
}

// MarshalJSON encodes what a decoder continuing the connection needs, so
// an instance taking over the shard continues it as this one would.
func (r *Resume) MarshalJSON() ([]byte, error) {
	return json.Marshal(resumeJSON{Conn: r.Conn, WS: r.ws, TCP: r.tcp, DirKnown: r.dirKnown, Req: r.req, Resp: r.resp,
		PMD: r.pmd, PMDKnown: r.pmdKnown, Boundary: r.boundary})
}

// UnmarshalJSON decodes MarshalJSON's encoding.
func (r *Resume) UnmarshalJSON(b []byte) error {
	var j resumeJSON
	if err := json.Unmarshal(b, &j); err != nil {
		return err
	}
	*r = Resume{Conn: j.Conn, ws: j.WS, tcp: j.TCP, dirKnown: j.DirKnown, req: j.Req, resp: j.Resp,
		pmd: j.PMD, pmdKnown: j.PMDKnown, boundary: j.Boundary}
	return nil
}
