package compress

import (
	"encoding/binary"
	"fmt"
	"net"
	"time"

	kcompress "github.com/klauspost/compress"
	"github.com/klauspost/compress/huff0"
	"github.com/klauspost/compress/s2"
)

// Frame is an encoded frame. Its bytes live in buffers of the Compressor
// until Release.
type Frame struct {
	c     *Compressor
	head  []byte   // header and block table
	out   []byte   // one region of maxEncoded bytes per block
	wire  []int    // wire size of each block
	segs  [][]byte // head, then the blocks' bytes
	src   spans
	codec Codec
	elem  int
	raw   int
	size  int
}

// Encode compresses the concatenation of srcs with codec (S2 or Zstd),
// shuffling elements of elem bytes first (elem below 2: no shuffle). The
// frame must be released once its bytes are written.
func (c *Compressor) Encode(codec Codec, elem int, srcs [][]byte) (*Frame, error) {
	if codec != S2 && codec != Zstd {
		return nil, fmt.Errorf("compress: encode with codec %v", codec)
	}
	if elem < 0 || elem > MaxElemSize {
		return nil, fmt.Errorf("compress: shuffle element of %d bytes, want 0..%d", elem, MaxElemSize)
	}
	start := time.Now()
	f := c.getFrame()
	f.codec, f.elem = codec, elem
	total := f.src.reset(srcs)
	f.raw = int(total)
	n := (f.raw + c.blockSize - 1) / c.blockSize
	region := regionFor(c.blockSize)
	f.head = grow(f.head, headerLen+n*blockEntry)
	f.out = grow(f.out, n*region)
	f.wire = f.wire[:0]
	for range n {
		f.wire = append(f.wire, 0)
	}
	err := c.parallel(n, func(w *worker, i int) error {
		f.encodeBlock(w, i, region)
		return nil
	})
	if err != nil {
		f.Release()
		return nil, err
	}
	stored := f.seal(n, region)
	c.stats.addEncode(f.raw, f.size, stored, elem >= 2, time.Since(start))
	return f, nil
}

func (c *Compressor) getFrame() *Frame {
	if f, ok := c.frames.Get().(*Frame); ok {
		return f
	}
	return &Frame{c: c}
}

func grow(b []byte, n int) []byte {
	if cap(b) < n {
		return make([]byte, n)
	}
	return b[:n]
}

// encodeBlock compresses block i into its region of f.out, or stores it
// when it does not shrink.
func (f *Frame) encodeBlock(w *worker, i, region int) {
	bs := f.c.blockSize
	lo := uint64(i * bs)
	hi := min(lo+uint64(bs), uint64(f.raw))
	n := int(hi - lo)
	a, b := w.scratch(n)
	in, ok := f.src.within(lo, hi)
	if !ok {
		f.src.gather(a, lo)
		in = a
	}
	orig := in
	if f.elem >= 2 {
		Shuffle(b, in, f.elem)
		in = b
	}
	out := f.out[i*region : (i+1)*region : (i+1)*region]
	wire, ok := f.c.compressBlock(w, f.codec, out, in, f.elem)
	if !ok {
		copy(out, orig)
		wire = n
	}
	f.wire[i] = wire
}

// regionFor is the room one block of n raw bytes may take while encoding.
func regionFor(n int) int {
	return s2.MaxEncodedLen(n) + MaxElemSize*(4+s2.MaxEncodedLen(0)+32)
}

// compressBlock compresses in (already shuffled when elem is 2 or more)
// into out and returns the wire size, or false when it does not shrink. A
// shuffled block is compressed plane by plane (each with its own entropy
// tables), each plane behind its wire size (u32): smaller than the plane
// when compressed, equal when stored as is; the last plane also holds the
// bytes past the last whole element.
func (c *Compressor) compressBlock(w *worker, codec Codec, out, in []byte, elem int) (int, bool) {
	if elem < 2 {
		if !worthTrying(codec, in) {
			return 0, false
		}
		enc, ok := c.compressInto(codec, out, in)
		return len(enc), ok && len(enc) < len(in)
	}
	pos := 0
	for p := range elem {
		seg := plane(in, elem, p)
		if pos+4+len(seg) > len(out) {
			return 0, false
		}
		n, huff := len(seg), false // a plane that does not shrink is stored as is
		if len(seg) > 0 && worthTrying(codec, seg) {
			if enc, h, ok := c.compressPlane(w, codec, out[pos+4:], seg); ok && len(enc) < len(seg) {
				n, huff = len(enc), h
			}
		}
		if n == len(seg) {
			copy(out[pos+4:], seg)
		}
		tag := uint32(n)
		if huff {
			tag |= planeHuff
		}
		binary.LittleEndian.PutUint32(out[pos:], tag)
		pos += 4 + n
		if pos >= len(in) {
			return 0, false
		}
	}
	return pos, true
}

// worthTrying tells whether zstd could shrink b: not when its bytes are
// spread evenly (entropy within 3% of 8 bits a byte, as for random bytes
// or the mantissa plane of bf16), which saves zstd's work on them. s2 skips
// such data quickly by itself.
func worthTrying(codec Codec, b []byte) bool {
	if codec != Zstd || len(b) < 1024 {
		return true
	}
	return kcompress.ShannonEntropyBits(b) < len(b)*8*97/100
}

// planeHuff, the top bit of a plane's wire size, marks a plane coded with
// huff0 alone (zstd's Huffman stage) rather than with the frame's codec.
const planeHuff = 1 << 31

// compressPlane compresses one plane of a shuffled block into out; huff
// says it was coded with huff0. With zstd, a plane where LZ finds little
// (the exponent or mantissa bytes of K/V: s2 does not halve a 4 KiB probe
// of it) is coded with huff0 alone, faster than zstd and a little smaller;
// other planes (runs, repeats) go through zstd.
func (c *Compressor) compressPlane(w *worker, codec Codec, out, seg []byte) (enc []byte, huff, ok bool) {
	if codec != Zstd || len(seg) > huff0.BlockSizeMax || lzHelps(w, seg) {
		enc, ok = c.compressInto(codec, out, seg)
		return enc, false, ok
	}
	w.huff.Reuse = huff0.ReusePolicyNone
	enc, _, err := huff0.Compress4X(seg, &w.huff)
	if err != nil || len(enc) > len(out) {
		return nil, false, false
	}
	return out[:copy(out, enc)], true, true
}

// lzHelps tells whether s2 halves the first 4 KiB of b.
func lzHelps(w *worker, b []byte) bool {
	probe := b[:min(len(b), 4<<10)]
	if cap(w.probe) < s2.MaxEncodedLen(4<<10) {
		w.probe = make([]byte, s2.MaxEncodedLen(4<<10))
	}
	return len(s2.Encode(w.probe, probe)) < len(probe)/2
}

// plane is the p-th of the elem planes of a shuffled block.
func plane(b []byte, elem, p int) []byte {
	n := len(b) / elem
	if p == elem-1 {
		return b[p*n:]
	}
	return b[p*n : (p+1)*n]
}

// compressInto compresses src into out and says whether the result lies in
// out (it always does unless out is too small).
func (c *Compressor) compressInto(codec Codec, out, src []byte) ([]byte, bool) {
	out = out[:len(out):len(out)]
	var enc []byte
	switch codec {
	case S2:
		if len(out) < s2.MaxEncodedLen(len(src)) {
			return nil, false
		}
		enc = s2.Encode(out, src)
	case Zstd:
		enc = c.zenc.EncodeAll(src, out[:0])
	}
	return enc, len(enc) > 0 && &enc[0] == &out[0]
}

// seal writes the header and table and lists the segments; it returns the
// number of stored blocks.
func (f *Frame) seal(n, region int) int {
	bs := f.c.blockSize
	f.segs = append(f.segs[:0], f.head)
	stored, wire := 0, 0
	for i := range n {
		raw := min(bs, f.raw-i*bs)
		if f.wire[i] == raw {
			stored++
		}
		putBlockEntry(f.head[headerLen+i*blockEntry:], raw, f.wire[i])
		f.segs = append(f.segs, f.out[i*region:i*region+f.wire[i]])
		wire += f.wire[i]
	}
	h := header{Codec: f.codec, Elem: uint8(f.elem), Blocks: uint32(n), Raw: uint64(f.raw), Wire: uint64(wire)}
	h.put(f.head)
	f.size = len(f.head) + wire
	return stored
}

// Len is the frame's size on the wire.
func (f *Frame) Len() int { return f.size }

// RawLen is the size of what the frame holds.
func (f *Frame) RawLen() int { return f.raw }

// AppendBuffers appends the frame's bytes to bufs for vectored writing.
func (f *Frame) AppendBuffers(bufs net.Buffers) net.Buffers {
	return append(bufs, f.segs...)
}

// AppendTo appends the frame's bytes to b.
func (f *Frame) AppendTo(b []byte) []byte {
	for _, s := range f.segs {
		b = append(b, s...)
	}
	return b
}

// Release hands the frame's buffers back; the frame must not be used
// afterwards.
func (f *Frame) Release() {
	f.src.parts = nil
	clear(f.segs)
	f.segs = f.segs[:0]
	f.c.frames.Put(f)
}
