package core

import (
	"encoding/binary"
	"errors"
	"fmt"
)

// ErrMalformed is wrapped by every decoding error of bytes from the network.
var ErrMalformed = errors.New("malformed")

// wireReader reads the little-endian encoding used by descriptors and
// control messages, bounded by the input: it never allocates more than the
// input holds and stops at the first error.
type wireReader struct {
	b   []byte
	off int
	err error
}

func (r *wireReader) fail(what string, format string, args ...any) {
	if r.err == nil {
		r.err = fmt.Errorf("%w: %s at byte %d: %s", ErrMalformed, what, r.off, fmt.Sprintf(format, args...))
	}
}

func (r *wireReader) take(n int, what string) []byte {
	if r.err != nil {
		return nil
	}
	if n < 0 || len(r.b)-r.off < n {
		r.fail(what, "need %d bytes, %d left", n, len(r.b)-r.off)
		return nil
	}
	v := r.b[r.off : r.off+n]
	r.off += n
	return v
}

func (r *wireReader) u8(what string) uint8 {
	b := r.take(1, what)
	if b == nil {
		return 0
	}
	return b[0]
}

func (r *wireReader) u16(what string) uint16 {
	b := r.take(2, what)
	if b == nil {
		return 0
	}
	return binary.LittleEndian.Uint16(b)
}

func (r *wireReader) u32(what string) uint32 {
	b := r.take(4, what)
	if b == nil {
		return 0
	}
	return binary.LittleEndian.Uint32(b)
}

func (r *wireReader) u64(what string) uint64 {
	b := r.take(8, what)
	if b == nil {
		return 0
	}
	return binary.LittleEndian.Uint64(b)
}

// str reads a string with a 16-bit length prefix, refusing more than max bytes.
func (r *wireReader) str(what string, max int) string {
	n := int(r.u16(what + " length"))
	if r.err == nil && n > max {
		r.fail(what, "length %d over the limit of %d", n, max)
		return ""
	}
	return string(r.take(n, what))
}

// blob reads bytes with a 16-bit length prefix, refusing more than max bytes.
func (r *wireReader) blob(what string, max int) []byte {
	n := int(r.u16(what + " length"))
	if r.err == nil && n > max {
		r.fail(what, "length %d over the limit of %d", n, max)
		return nil
	}
	b := r.take(n, what)
	if b == nil {
		return nil
	}
	return append([]byte(nil), b...)
}

func (r *wireReader) end() error {
	if r.err == nil && r.off != len(r.b) {
		r.fail("end", "%d trailing bytes", len(r.b)-r.off)
	}
	return r.err
}

type wireWriter struct{ b []byte }

func (w *wireWriter) u8(v uint8)   { w.b = append(w.b, v) }
func (w *wireWriter) u16(v uint16) { w.b = binary.LittleEndian.AppendUint16(w.b, v) }
func (w *wireWriter) u32(v uint32) { w.b = binary.LittleEndian.AppendUint32(w.b, v) }
func (w *wireWriter) u64(v uint64) { w.b = binary.LittleEndian.AppendUint64(w.b, v) }
func (w *wireWriter) str(s string) { w.u16(uint16(len(s))); w.b = append(w.b, s...) }
func (w *wireWriter) blob(b []byte) {
	w.u16(uint16(len(b)))
	w.b = append(w.b, b...)
}
