package pmd

// FlateReaderCost is the heap a deflate reader holds once created: its
// 32 KiB history window and Huffman tables (measured for
// klauspost/compress/flate; see TestFlateReaderCost).
const FlateReaderCost = 40 << 10

// Memory returns the bytes the Inflater holds: the deflate reader, its
// output buffer, the window kept for context takeover and the compressed
// bytes waiting to be inflated.
func (f *Inflater) Memory() int64 {
	n := int64(cap(f.window) + cap(f.out) + cap(f.src.buf))
	if f.fr != nil {
		n += FlateReaderCost
	}
	return n
}

// Memory returns the bytes the Prober holds.
func (p *Prober) Memory() int64 {
	n := int64(cap(p.buf) + cap(p.out))
	if p.fr != nil {
		n += FlateReaderCost
	}
	return n
}
