package compress

// Shuffle writes src to dst byte plane by byte plane for elements of elem
// bytes: the first bytes of every element, then the second bytes, and so
// on. Bytes past the last whole element are copied as they are. dst must be
// as long as src and must not overlap it; elem below 2 copies.
func Shuffle(dst, src []byte, elem int) {
	dst = dst[:len(src)]
	if elem < 2 {
		copy(dst, src)
		return
	}
	n := len(src) / elem
	if elem == 2 {
		shuffle2(dst, src, n)
	} else {
		for i := range n {
			for b := range elem {
				dst[b*n+i] = src[i*elem+b]
			}
		}
	}
	copy(dst[n*elem:], src[n*elem:])
}

// Unshuffle is the inverse of Shuffle with the same elem.
func Unshuffle(dst, src []byte, elem int) {
	dst = dst[:len(src)]
	if elem < 2 {
		copy(dst, src)
		return
	}
	n := len(src) / elem
	if elem == 2 {
		unshuffle2(dst, src, n)
	} else {
		for i := range n {
			for b := range elem {
				dst[i*elem+b] = src[b*n+i]
			}
		}
	}
	copy(dst[n*elem:], src[n*elem:])
}

func shuffle2(dst, src []byte, n int) {
	lo, hi := dst[:n], dst[n:2*n]
	src = src[:2*n]
	for i := range lo {
		lo[i] = src[2*i]
		hi[i] = src[2*i+1]
	}
}

func unshuffle2(dst, src []byte, n int) {
	lo, hi := src[:n], src[n:2*n]
	dst = dst[:2*n]
	for i := range lo {
		dst[2*i] = lo[i]
		dst[2*i+1] = hi[i]
	}
}
