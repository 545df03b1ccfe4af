package compress

import (
	"encoding/binary"
	"fmt"
	"time"

	"github.com/klauspost/compress/huff0"
	"github.com/klauspost/compress/s2"
)

// decodeJob is the state of one Decode, pooled.
type decodeJob struct {
	c      *Compressor
	h      header
	blocks []block
	data   []byte
	dst    spans
}

// Decode decodes frame into the concatenation of dsts, which must be
// exactly as long as what the frame holds. Nothing is written outside dsts;
// on error their contents are undefined.
func (c *Compressor) Decode(frame []byte, dsts [][]byte) error {
	start := time.Now()
	j, _ := c.decodes.Get().(*decodeJob)
	if j == nil {
		j = &decodeJob{c: c}
	}
	defer func() {
		j.dst.parts, j.data = nil, nil
		c.decodes.Put(j)
	}()
	want := j.dst.reset(dsts)
	h, table, data, err := parseHeader(frame, want)
	if err != nil {
		return err
	}
	if j.blocks, err = parseTable(h, table, j.blocks); err != nil {
		return err
	}
	j.h, j.data = h, data
	if err := c.parallel(len(j.blocks), j.decodeBlock); err != nil {
		return err
	}
	c.stats.addDecode(int(h.Raw), len(frame), time.Since(start))
	return nil
}

// decodeBlock writes block i to its place in the destinations: straight
// into one destination when it lies inside it and is not shuffled, through
// scratch otherwise.
func (j *decodeJob) decodeBlock(w *worker, i int) error {
	b := j.blocks[i]
	src := j.data[b.wireOff : b.wireOff+b.wire]
	lo, hi := b.rawOff, b.rawOff+uint64(b.raw)
	direct, inside := j.dst.within(lo, hi)
	if b.stored {
		if inside {
			copy(direct, src)
		} else {
			j.dst.scatter(src, lo)
		}
		return nil
	}
	elem := int(j.h.Elem)
	a, s := w.scratch(b.raw)
	target := a
	if inside && elem < 2 {
		target = direct
	}
	var err error
	if elem >= 2 {
		err = j.decompressPlanes(w, target, src, elem)
	} else {
		err = j.decompress(target, src)
	}
	if err != nil {
		return fmt.Errorf("%w: block %d: %w", ErrCorrupt, i, err)
	}
	out := target
	if elem >= 2 {
		out = s
		if inside {
			out = direct
		}
		Unshuffle(out, target, elem)
	}
	if !inside {
		j.dst.scatter(out, lo)
	}
	return nil
}

// decompressPlanes fills dst from the elem planes of a shuffled block.
func (j *decodeJob) decompressPlanes(w *worker, dst, src []byte, elem int) error {
	for p := range elem {
		if len(src) < 4 {
			return fmt.Errorf("plane %d: %d bytes left, no room for its size", p, len(src))
		}
		tag := binary.LittleEndian.Uint32(src)
		n, huff := tag&^planeHuff, tag&planeHuff != 0
		src = src[4:]
		if uint64(n) > uint64(len(src)) {
			return fmt.Errorf("plane %d: %d bytes, %d left", p, n, len(src))
		}
		seg, out := src[:n], plane(dst, elem, p)
		src = src[n:]
		switch {
		case uint64(n) > uint64(len(out)):
			return fmt.Errorf("plane %d: %d bytes for %d", p, n, len(out))
		case int(n) == len(out): // stored
			copy(out, seg)
			continue
		}
		var err error
		if huff {
			if j.h.Codec != Zstd || len(out) > huff0.BlockSizeMax {
				return fmt.Errorf("plane %d: huff0 plane of %d bytes in a %v frame", p, len(out), j.h.Codec)
			}
			err = huffDecode(&w.huff, out, seg)
		} else {
			err = j.decompress(out, seg)
		}
		if err != nil {
			return fmt.Errorf("plane %d: %w", p, err)
		}
	}
	if len(src) != 0 {
		return fmt.Errorf("%d bytes after the last plane", len(src))
	}
	return nil
}

// huffDecode fills dst from a huff0 plane: its table, then 4 streams; the
// decoder writes within dst's capacity, its length.
func huffDecode(s *huff0.Scratch, dst, src []byte) error {
	s, rest, err := huff0.ReadTable(src, s)
	if err != nil {
		return err
	}
	s.MaxDecodedSize = len(dst)
	out, err := s.Decoder().Decompress4X(dst[:0:len(dst)], rest)
	if err != nil {
		return err
	}
	if len(out) != len(dst) || &out[0] != &dst[0] {
		return fmt.Errorf("plane decodes to %d bytes, want %d", len(out), len(dst))
	}
	return nil
}

// decompress fills dst exactly from src; the decoders are bounded by
// dst's capacity, which is its length.
func (j *decodeJob) decompress(dst, src []byte) error {
	dst = dst[:len(dst):len(dst)]
	var out []byte
	switch j.h.Codec {
	case S2:
		n, err := s2.DecodedLen(src)
		if err != nil {
			return err
		}
		if n != len(dst) {
			return fmt.Errorf("s2 block of %d bytes, want %d", n, len(dst))
		}
		if out, err = s2.Decode(dst, src); err != nil {
			return err
		}
	case Zstd:
		var err error
		if out, err = j.c.zdec.DecodeAll(src, dst[:0]); err != nil {
			return err
		}
	}
	if len(out) != len(dst) || &out[0] != &dst[0] {
		return fmt.Errorf("block decodes to %d bytes, want %d", len(out), len(dst))
	}
	return nil
}
