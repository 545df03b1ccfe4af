package compress

// spans is the concatenation of a list of slices (the ranges of a frame)
// with the offset at which each starts.
type spans struct {
	parts  [][]byte
	starts []uint64 // len(parts)+1 offsets; the last is the total
}

func (s *spans) reset(parts [][]byte) uint64 {
	s.parts = parts
	s.starts = s.starts[:0]
	var off uint64
	for _, p := range parts {
		s.starts = append(s.starts, off)
		off += uint64(len(p))
	}
	s.starts = append(s.starts, off)
	return off
}

// find is the index of the part that holds byte lo (lo below the total):
// the first part that ends past lo, which skips empty parts.
func (s *spans) find(lo uint64) int {
	i, j := 0, len(s.parts)
	for i < j {
		h := int(uint(i+j) >> 1)
		if s.starts[h+1] <= lo {
			i = h + 1
		} else {
			j = h
		}
	}
	return i
}

// within returns bytes [lo, hi) when they lie in one part, capacity
// limited to them.
func (s *spans) within(lo, hi uint64) ([]byte, bool) {
	k := s.find(lo)
	if hi > s.starts[k+1] {
		return nil, false
	}
	a, b := lo-s.starts[k], hi-s.starts[k]
	return s.parts[k][a:b:b], true
}

// gather copies bytes [lo, lo+len(dst)) into dst.
func (s *spans) gather(dst []byte, lo uint64) {
	for k := s.find(lo); len(dst) > 0; k++ {
		n := copy(dst, s.parts[k][lo-s.starts[k]:])
		dst = dst[n:]
		lo += uint64(n)
	}
}

// scatter copies src to bytes [lo, lo+len(src)).
func (s *spans) scatter(src []byte, lo uint64) {
	for k := s.find(lo); len(src) > 0; k++ {
		n := copy(s.parts[k][lo-s.starts[k]:], src)
		src = src[n:]
		lo += uint64(n)
	}
}
