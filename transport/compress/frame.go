package compress

import (
	"encoding/binary"
	"errors"
	"fmt"
)

const (
	frameMagic   = 0x5a4d // "MZ"
	frameVersion = 1
	headerLen    = 32
	blockEntry   = 8

	// MaxBlockSize is the largest raw block a decoder accepts; it bounds
	// the scratch memory one frame can make a receiver use.
	MaxBlockSize = 4 << 20
	// MaxElemSize is the largest shuffle element.
	MaxElemSize = 16
)

// ErrCorrupt is wrapped by every error about a frame that breaks the format
// or does not fit its destination.
var ErrCorrupt = errors.New("compressed frame refused")

// header is the fixed part of a frame.
type header struct {
	Codec  Codec
	Elem   uint8
	Blocks uint32
	Raw    uint64
	Wire   uint64
}

func (h *header) put(b []byte) {
	clear(b[:headerLen])
	binary.LittleEndian.PutUint16(b[0:], frameMagic)
	b[2] = frameVersion
	b[3] = uint8(h.Codec)
	b[4] = h.Elem
	binary.LittleEndian.PutUint32(b[8:], h.Blocks)
	binary.LittleEndian.PutUint64(b[16:], h.Raw)
	binary.LittleEndian.PutUint64(b[24:], h.Wire)
}

// parseHeader decodes and checks the header of frame against the raw size
// the receiver expects, and returns it with the block table and the blocks'
// bytes.
func parseHeader(frame []byte, want uint64) (header, []byte, []byte, error) {
	var h header
	if len(frame) < headerLen {
		return h, nil, nil, fmt.Errorf("%w: %d bytes, shorter than the %d-byte header", ErrCorrupt, len(frame), headerLen)
	}
	if m := binary.LittleEndian.Uint16(frame[0:]); m != frameMagic {
		return h, nil, nil, fmt.Errorf("%w: bad magic %#04x", ErrCorrupt, m)
	}
	if v := frame[2]; v != frameVersion {
		return h, nil, nil, fmt.Errorf("%w: version %d, want %d", ErrCorrupt, v, frameVersion)
	}
	h.Codec = Codec(frame[3])
	h.Elem = frame[4]
	h.Blocks = binary.LittleEndian.Uint32(frame[8:])
	h.Raw = binary.LittleEndian.Uint64(frame[16:])
	h.Wire = binary.LittleEndian.Uint64(frame[24:])
	if h.Codec != S2 && h.Codec != Zstd {
		return h, nil, nil, fmt.Errorf("%w: unknown codec %d", ErrCorrupt, h.Codec)
	}
	if h.Elem > MaxElemSize {
		return h, nil, nil, fmt.Errorf("%w: shuffle element of %d bytes, at most %d", ErrCorrupt, h.Elem, MaxElemSize)
	}
	if h.Raw != want {
		return h, nil, nil, fmt.Errorf("%w: frame holds %d raw bytes, its ranges %d", ErrCorrupt, h.Raw, want)
	}
	rest := uint64(len(frame) - headerLen)
	if uint64(h.Blocks) > rest/blockEntry {
		return h, nil, nil, fmt.Errorf("%w: %d blocks do not fit a %d-byte frame", ErrCorrupt, h.Blocks, len(frame))
	}
	table := frame[headerLen : headerLen+int(h.Blocks)*blockEntry]
	data := frame[headerLen+len(table):]
	if h.Wire != uint64(len(data)) {
		return h, nil, nil, fmt.Errorf("%w: header says %d block bytes, frame holds %d", ErrCorrupt, h.Wire, len(data))
	}
	return h, table, data, nil
}

// block is one entry of the table with its place in the raw and wire
// streams.
type block struct {
	raw, wire int
	rawOff    uint64
	wireOff   int
	stored    bool
}

// parseTable checks every entry of the table against the header and fills
// blocks with their offsets.
func parseTable(h header, table []byte, blocks []block) ([]block, error) {
	blocks = blocks[:0]
	var rawSum, wireSum uint64
	for i := 0; i < int(h.Blocks); i++ {
		raw := binary.LittleEndian.Uint32(table[i*blockEntry:])
		wire := binary.LittleEndian.Uint32(table[i*blockEntry+4:])
		if raw == 0 || raw > MaxBlockSize {
			return blocks, fmt.Errorf("%w: block %d of %d raw bytes, want 1..%d", ErrCorrupt, i, raw, MaxBlockSize)
		}
		if wire == 0 || wire > raw {
			return blocks, fmt.Errorf("%w: block %d of %d wire bytes for %d raw", ErrCorrupt, i, wire, raw)
		}
		if rawSum+uint64(raw) > h.Raw || wireSum+uint64(wire) > h.Wire {
			return blocks, fmt.Errorf("%w: block %d ends past the frame", ErrCorrupt, i)
		}
		blocks = append(blocks, block{raw: int(raw), wire: int(wire), rawOff: rawSum, wireOff: int(wireSum), stored: wire == raw})
		rawSum += uint64(raw)
		wireSum += uint64(wire)
	}
	if rawSum != h.Raw || wireSum != h.Wire {
		return blocks, fmt.Errorf("%w: blocks hold %d raw and %d wire bytes, header %d and %d", ErrCorrupt, rawSum, wireSum, h.Raw, h.Wire)
	}
	return blocks, nil
}

func putBlockEntry(b []byte, raw, wire int) {
	binary.LittleEndian.PutUint32(b[0:], uint32(raw))
	binary.LittleEndian.PutUint32(b[4:], uint32(wire))
}
