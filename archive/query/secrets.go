package query

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"

	"github.com/tapline/tapline/archive/store"
	"github.com/tapline/tapline/proto/flow"
)

// KeysDir is the store directory of the TLS key log lines kept by
// `archive --keys`.
const KeysDir = "keys"

// SecretsSlack is how far before and after the queried time range key
// objects are searched for the client randoms of the result: keys are
// stored when the key shipper's message reached JetStream, seconds (at
// worst minutes) from the handshake's capture time.
const SecretsSlack = 15 * time.Minute

// Pcapng Decryption Secrets Block (pcapng draft, section 4.8).
const (
	dsbType        = 0x0000000A
	secretsTLSKeys = 0x544c534b // "TLSK": NSS key log lines
)

// ErrNoKeys is returned by WriteWithSecrets when the archive holds no key
// log lines (it was not run with --keys).
var ErrNoKeys = errors.New("the archive holds no TLS keys (run the archive with --keys to keep them)")

// KeyObject is the store key of key log lines first stored at t, from
// stream sequences first to last of TAPLINE_KEYS.
func KeyObject(t time.Time, first, last uint64) string {
	t = t.UTC()
	return fmt.Sprintf("%s/date=%s/hour=%02d/%020d-%020d.keylog", KeysDir, t.Format("2006-01-02"), t.Hour(), first, last)
}

// HasKeys reports whether the archive holds any key log object.
func HasKeys(ctx context.Context, st store.Store) (bool, error) {
	dirs, err := st.Dirs(ctx, KeysDir+"/")
	if err != nil && !errors.Is(err, store.ErrNotFound) {
		return false, err
	}
	return len(dirs) > 0, nil
}

// keyObjects returns the key objects of the hours overlapping
// [fromNs-SecretsSlack, toNs+SecretsSlack).
func keyObjects(ctx context.Context, st store.Store, fromNs, toNs int64) ([]string, error) {
	from := time.Unix(0, fromNs).UTC().Add(-SecretsSlack).Truncate(time.Hour)
	to := time.Unix(0, toNs).UTC().Add(SecretsSlack)
	var out []string
	for day := from.Truncate(24 * time.Hour); day.Before(to); day = day.Add(24 * time.Hour) {
		ks, err := st.List(ctx, KeysDir+"/date="+day.Format("2006-01-02")+"/")
		if err != nil && !errors.Is(err, store.ErrNotFound) {
			return nil, err
		}
		for _, k := range ks {
			var hh int
			rest := strings.TrimPrefix(k, KeysDir+"/date="+day.Format("2006-01-02")+"/")
			if _, err := fmt.Sscanf(rest, "hour=%d/", &hh); err != nil {
				continue
			}
			start := day.Add(time.Duration(hh) * time.Hour)
			if !start.Before(from) && start.Before(to) {
				out = append(out, k)
			}
		}
	}
	return out, nil
}

// SecretsResult says what WriteWithSecrets found.
type SecretsResult struct {
	// ClientHellos are the distinct client randoms of TLS ClientHellos in
	// the packets written.
	ClientHellos int
	// Connections are those of them with at least one key line.
	Connections int
	// Lines are the key log lines written into the Decryption Secrets
	// Block.
	Lines int
}

// WriteWithSecrets is WriteFormat in pcapng that also writes, before the
// packets, a Decryption Secrets Block (type 0x0000000A, secrets type TLS
// key log 0x544c534b) holding the key log lines, kept by `archive --keys`,
// of the TLS connections whose ClientHello is among the packets written:
// matched by client random, and no other key. tshark and Wireshark then
// decrypt those connections with no extra option. Connections whose
// ClientHello is outside the result cannot be decrypted from it and get
// no key. It returns ErrNoKeys, writing nothing, when the archive holds no
// keys. The packets are staged in a temporary file (the block must precede
// them and the keys are known only once they are all read).
func WriteWithSecrets(ctx context.Context, st store.Store, chunks []Chunk, f Filter, w io.Writer, progress Progress) (Result, SecretsResult, error) {
	var sr SecretsResult
	has, err := HasKeys(ctx, st)
	if err != nil {
		return Result{}, sr, err
	}
	if !has {
		return Result{}, sr, ErrNoKeys
	}
	tmp, err := os.CreateTemp("", "tapline-query-*.pcapng")
	if err != nil {
		return Result{}, sr, err
	}
	defer os.Remove(tmp.Name())
	defer tmp.Close()
	randoms := map[[32]byte]bool{}
	res, err := writeFormat(ctx, st, chunks, f, tmp, FormatPcapng, progress, func(p *pkt) {
		if r, ok := ClientRandom(p.iface.Link, p.data); ok {
			randoms[r] = true
		}
	})
	if err != nil {
		return res, sr, err
	}
	sr.ClientHellos = len(randoms)
	var secrets []byte
	if len(randoms) > 0 {
		objs, err := keyObjects(ctx, st, f.FromNs, f.ToNs)
		if err != nil {
			return res, sr, err
		}
		seen := map[string]bool{}
		matched := map[[32]byte]bool{}
		for _, k := range objs {
			b, err := st.Get(ctx, k)
			if err != nil {
				res.Errors = append(res.Errors, fmt.Errorf("key object %s is unreadable: %w", k, err))
				continue
			}
			for _, line := range bytes.SplitAfter(b, []byte("\n")) {
				r, ok := keyLineRandom(line)
				if !ok || !randoms[r] || seen[string(line)] {
					continue
				}
				seen[string(line)] = true
				matched[r] = true
				secrets = append(secrets, bytes.TrimRight(line, "\r\n")...)
				secrets = append(secrets, '\n')
				sr.Lines++
			}
		}
		sr.Connections = len(matched)
	}
	if _, err := tmp.Seek(0, io.SeekStart); err != nil {
		return res, sr, err
	}
	return res, sr, spliceSecrets(w, bufio.NewReaderSize(tmp, 1<<20), secrets)
}

// spliceSecrets copies the pcapng in r to w with a Decryption Secrets Block
// of secrets (none when empty) right after its Section Header Block.
func spliceSecrets(w io.Writer, r io.Reader, secrets []byte) error {
	hdr := make([]byte, 12)
	if _, err := io.ReadFull(r, hdr); err != nil {
		return fmt.Errorf("staged pcapng: %w", err)
	}
	var bo byteOrder = binary.LittleEndian
	if binary.BigEndian.Uint32(hdr[8:12]) == 0x1A2B3C4D {
		bo = binary.BigEndian
	}
	if bo.Uint32(hdr[0:4]) != 0x0A0D0D0A || bo.Uint32(hdr[8:12]) != 0x1A2B3C4D {
		return fmt.Errorf("staged pcapng does not start with a section header")
	}
	shbLen := int64(bo.Uint32(hdr[4:8]))
	if shbLen < 28 || shbLen%4 != 0 {
		return fmt.Errorf("staged pcapng: bad section header length %d", shbLen)
	}
	bw := bufio.NewWriterSize(w, 1<<20)
	bw.Write(hdr)
	if _, err := io.CopyN(bw, r, shbLen-12); err != nil {
		return fmt.Errorf("staged pcapng: %w", err)
	}
	if len(secrets) > 0 {
		bw.Write(DecryptionSecretsBlock(bo, secrets))
	}
	if _, err := io.Copy(bw, r); err != nil {
		return err
	}
	return bw.Flush()
}

// byteOrder reads and appends in one byte order (binary.LittleEndian or
// binary.BigEndian).
type byteOrder interface {
	binary.ByteOrder
	binary.AppendByteOrder
}

// DecryptionSecretsBlock is a pcapng Decryption Secrets Block holding NSS
// key log lines, in byte order bo.
func DecryptionSecretsBlock(bo byteOrder, keyLog []byte) []byte {
	pad := (4 - len(keyLog)%4) % 4
	total := 4 + 4 + 4 + 4 + len(keyLog) + pad + 4
	b := make([]byte, 0, total)
	b = bo.AppendUint32(b, dsbType)
	b = bo.AppendUint32(b, uint32(total))
	b = bo.AppendUint32(b, secretsTLSKeys)
	b = bo.AppendUint32(b, uint32(len(keyLog)))
	b = append(b, keyLog...)
	b = append(b, make([]byte, pad)...)
	return bo.AppendUint32(b, uint32(total))
}

// ClientRandom returns the client random of a TLS ClientHello starting a
// TCP segment's payload in frame data (link type link). A ClientHello split
// over segments still has its random in the first: record header (5),
// handshake header (4), version (2), then the 32 bytes.
func ClientRandom(link flow.LinkType, data []byte) ([32]byte, bool) {
	var r [32]byte
	if !bytes.Contains(data, []byte{0x16, 0x03}) {
		return r, false
	}
	p := gopacket.NewPacket(data, layers.LinkType(link), gopacket.DecodeOptions{Lazy: true, NoCopy: true})
	tcp, _ := p.Layer(layers.LayerTypeTCP).(*layers.TCP)
	if tcp == nil {
		return r, false
	}
	pl := tcp.Payload
	if len(pl) < 43 || pl[0] != 0x16 || pl[1] != 0x03 || pl[5] != 0x01 {
		return r, false
	}
	copy(r[:], pl[11:43])
	return r, true
}

// keyLineRandom returns the client random of an NSS key log line
// "LABEL <64 hex> <hex>", or false for any other line.
func keyLineRandom(line []byte) ([32]byte, bool) {
	var r [32]byte
	fields := bytes.Fields(line)
	if len(fields) != 3 || len(fields[1]) != 64 || len(fields[2]) == 0 || len(fields[2])%2 != 0 || len(fields[2]) > 256 {
		return r, false
	}
	if _, err := hex.Decode(r[:], fields[1]); err != nil {
		return r, false
	}
	if _, err := hex.DecodeString(string(fields[2])); err != nil {
		return r, false
	}
	return r, true
}
