package reassemble

import (
	"time"

	"github.com/gopacket/gopacket"

	"github.com/tapline/tapline/proto/framebatch"
)

func gopacketCI(f framebatch.Frame) gopacket.CaptureInfo {
	return gopacket.CaptureInfo{Timestamp: time.Unix(0, f.TimeNs), CaptureLength: len(f.Data), Length: f.OrigLen}
}
