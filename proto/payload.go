package proto

import "fmt"

// ChunkHeaderRoom is the room a data chunk's headers (connection id,
// addresses, sequence, flags, reason) take at most on the wire.
const ChunkHeaderRoom = 16 << 10

// MinMaxPayload is the smallest NATS max_payload a full chunk with its
// headers fits: MaxChunk + ChunkHeaderRoom (999,424 bytes, under a stock
// server's 1 MB).
const MinMaxPayload = MaxChunk + ChunkHeaderRoom

// CheckMaxPayload returns one line saying what to set when the server's
// max_payload (nats.Conn.MaxPayload) is too small for a full chunk.
func CheckMaxPayload(serverMax int64) error {
	if serverMax > 0 && serverMax < MinMaxPayload {
		return fmt.Errorf("the NATS server's max_payload is %d bytes, less than the %d a message chunk with its headers needs: raise max_payload to at least that in the server configuration (the default, 1MB, is enough)", serverMax, MinMaxPayload)
	}
	return nil
}
