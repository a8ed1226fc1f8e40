// Package captures reads the tshark-derived expectations that go with the
// real test captures in testdata/captures/expected, so every module's tests
// compare against the same figures with one parser.
package captures

import (
	"bufio"
	"encoding/json"
	"fmt"
	"os"
	"regexp"
	"strconv"
	"strings"

	"github.com/tapline/tapline/proto"
)

// WSMsg is one message line of an expected/<capture>.wsmsgs.txt file.
type WSMsg struct {
	Kind   string `json:"kind"`   // text, binary, ping, pong, close
	Len    int    `json:"len"`    // payload length (inflated)
	Sha1   string `json:"sha1_8"` // first 8 hex digits of the payload's SHA-1 (data messages)
	Code   int    `json:"code"`   // close code
	Data   string `json:"data"`   // control frame payload (ping/pong)
	Reason string `json:"reason"` // close reason
}

// WSExpect is the content of one wsmsgs.txt file: the connection's
// endpoints as tshark saw them and its messages per direction, in order.
type WSExpect struct {
	Client, Server string
	Msgs           map[proto.Direction][]WSMsg
}

var (
	streamLine = regexp.MustCompile(`^-- stream \d+ (\S+) -> (\S+)`)
	numField   = regexp.MustCompile(`"(len|code)": (\d+)`)
	strField   = regexp.MustCompile(`"(kind|sha1_8)": "(\w+)"`)
)

// ReadWSMessages parses an expected/<capture>.wsmsgs.txt file. A message
// line cut short in the file (the oversized close) keeps the fields it has.
func ReadWSMessages(path string) (WSExpect, error) {
	f, err := os.Open(path)
	if err != nil {
		return WSExpect{}, err
	}
	defer f.Close()
	w := WSExpect{Msgs: map[proto.Direction][]WSMsg{}}
	var dir proto.Direction
	sc := bufio.NewScanner(f)
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		l := strings.TrimSpace(sc.Text())
		switch {
		case streamLine.MatchString(l):
			m := streamLine.FindStringSubmatch(l)
			w.Client, w.Server = m[1], m[2]
		case strings.HasPrefix(l, "c2s:"):
			dir = proto.ClientToServer
		case strings.HasPrefix(l, "s2c:"):
			dir = proto.ServerToClient
		case strings.HasPrefix(l, "{"):
			if dir == "" {
				return w, fmt.Errorf("%s: message line before a direction line", path)
			}
			var m WSMsg
			if json.Unmarshal([]byte(l), &m) != nil {
				for _, f := range strField.FindAllStringSubmatch(l, -1) {
					if f[1] == "kind" {
						m.Kind = f[2]
					} else {
						m.Sha1 = f[2]
					}
				}
				for _, f := range numField.FindAllStringSubmatch(l, -1) {
					n, _ := strconv.Atoi(f[2])
					if f[1] == "len" {
						m.Len = n
					} else {
						m.Code = n
					}
				}
			}
			w.Msgs[dir] = append(w.Msgs[dir], m)
		}
	}
	return w, sc.Err()
}
