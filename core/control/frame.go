package control

import (
	"encoding/binary"
	"fmt"
	"io"

	"github.com/mori-go/mori-go/core"
)

// A frame carries one message over the TLS transport:
//
//	[u32 n]                     length of what follows, 1..maxFrame
//	[u8 count]                  number of parts, 1..maxParts
//	count x [u32 part length]
//	the parts, back to back     lengths summing to the rest of the frame
//
// Integers are little-endian. A message's parts are those of the ZeroMQ
// transport: [kind, body] or [kind, body, MAC].
const (
	maxParts = 3
	// maxFrame bounds a frame: a message of MaxMessage bytes plus the
	// kind, the MAC and the part lengths.
	maxFrame = MaxMessage + 1024
)

// errFrameSize is returned by readFrame for a length of 0 or over maxFrame;
// the rest of the frame is not read, and the connection cannot go on.
type errFrameSize struct{ n uint32 }

func (e errFrameSize) Error() string {
	return fmt.Sprintf("%s: frame of %d bytes, want 1..%d", core.ErrMalformed, e.n, maxFrame)
}

func (e errFrameSize) Unwrap() error { return core.ErrMalformed }

// appendFrame appends the frame of parts to b.
func appendFrame(b []byte, parts [][]byte) []byte {
	n := 1 + 4*len(parts)
	for _, p := range parts {
		n += len(p)
	}
	b = binary.LittleEndian.AppendUint32(b, uint32(n))
	b = append(b, byte(len(parts)))
	for _, p := range parts {
		b = binary.LittleEndian.AppendUint32(b, uint32(len(p)))
	}
	for _, p := range parts {
		b = append(b, p...)
	}
	return b
}

// decodeFrame splits a frame's content (what follows its length) into its
// parts, which alias b.
func decodeFrame(b []byte) ([][]byte, error) {
	if len(b) < 1 {
		return nil, fmt.Errorf("frame: %w: empty", core.ErrMalformed)
	}
	count := int(b[0])
	if count < 1 || count > maxParts {
		return nil, fmt.Errorf("frame: %w: %d parts, want 1..%d", core.ErrMalformed, count, maxParts)
	}
	head := 1 + 4*count
	if len(b) < head {
		return nil, fmt.Errorf("frame: %w: %d bytes cannot hold %d part lengths", core.ErrMalformed, len(b), count)
	}
	parts := make([][]byte, count)
	off := head
	for i := range parts {
		n := binary.LittleEndian.Uint32(b[1+4*i:])
		if uint64(n) > uint64(len(b)-off) {
			return nil, fmt.Errorf("frame: %w: part %d of %d bytes past the end of the frame", core.ErrMalformed, i, n)
		}
		parts[i] = b[off : off+int(n) : off+int(n)]
		off += int(n)
	}
	if off != len(b) {
		return nil, fmt.Errorf("frame: %w: %d bytes after the last part", core.ErrMalformed, len(b)-off)
	}
	return parts, nil
}

// readFrameLength reads a frame's length and checks it against maxFrame.
func readFrameLength(r io.Reader) (int, error) {
	var h [4]byte
	if _, err := io.ReadFull(r, h[:]); err != nil {
		return 0, err
	}
	n := binary.LittleEndian.Uint32(h[:])
	if n == 0 || n > maxFrame {
		return 0, errFrameSize{n}
	}
	return int(n), nil
}

// readFrameBody reads a frame's content of n bytes and decodes it.
func readFrameBody(r io.Reader, n int) ([][]byte, error) {
	b := make([]byte, n)
	if _, err := io.ReadFull(r, b); err != nil {
		return nil, err
	}
	return decodeFrame(b)
}

// readFrame reads one frame.
func readFrame(r io.Reader) ([][]byte, error) {
	n, err := readFrameLength(r)
	if err != nil {
		return nil, err
	}
	return readFrameBody(r, n)
}
