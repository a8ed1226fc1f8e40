package stage

import (
	"crypto/rand"
	"encoding/hex"
	"os"
	"strconv"
)

// NewInstanceID names one run of a stage in its reports (e.g. the
// "instance" of decap's drop reports): "<host>/<pid>/<8 random hex>". The
// random part tells apart two runs with the same host and pid (a
// container restarted, a stage run twice in one process), so a reader
// can keep each run's totals apart.
func NewInstanceID() string {
	host, err := os.Hostname()
	if err != nil || host == "" {
		host = "unknown"
	}
	var b [4]byte
	_, _ = rand.Read(b[:])
	return host + "/" + strconv.Itoa(os.Getpid()) + "/" + hex.EncodeToString(b[:])
}
