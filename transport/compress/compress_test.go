package compress

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"sync"
	"testing"

	"github.com/mori-go/mori-go/internal/kvdata"
	"github.com/stretchr/testify/require"
)

const testBlock = 16 << 10

func newTest(t testing.TB, workers int) *Compressor {
	c, err := New(Options{BlockSize: testBlock, Workers: workers})
	require.NoError(t, err)
	t.Cleanup(c.Close)
	return c
}

func payload(t testing.TB, kind kvdata.Kind, n int, seed uint64) []byte {
	b := make([]byte, n)
	require.NoError(t, kvdata.Fill(kind, b, seed))
	return b
}

// split cuts b into parts at random places, with some empty parts.
func split(b []byte, r *rand.Rand, parts int) [][]byte {
	out := [][]byte{}
	for len(b) > 0 && len(out) < parts-1 {
		n := r.IntN(min(len(b), 3*testBlock) + 1)
		out = append(out, b[:n])
		b = b[n:]
	}
	return append(out, b)
}

// guarded is a destination of n bytes cut into parts inside a larger
// buffer whose edges must stay untouched.
type guarded struct {
	buf   []byte
	parts [][]byte
}

const guardLen = 64

func newGuarded(n int, r *rand.Rand, parts int) *guarded {
	g := &guarded{buf: bytes.Repeat([]byte{0xa5}, n+2*guardLen)}
	g.parts = split(g.buf[guardLen:guardLen+n:guardLen+n], r, parts)
	for i, p := range g.parts {
		g.parts[i] = p[:len(p):len(p)]
	}
	return g
}

func (g *guarded) body() []byte { return g.buf[guardLen : len(g.buf)-guardLen] }

func (g *guarded) requireGuards(t testing.TB) {
	edge := bytes.Repeat([]byte{0xa5}, guardLen)
	require.Equal(t, edge, g.buf[:guardLen], "bytes written before the destination")
	require.Equal(t, edge, g.buf[len(g.buf)-guardLen:], "bytes written after the destination")
}

func encodeBytes(t testing.TB, c *Compressor, codec Codec, elem int, srcs [][]byte) []byte {
	f, err := c.Encode(codec, elem, srcs)
	require.NoError(t, err)
	defer f.Release()
	out := f.AppendTo(nil)
	require.Len(t, out, f.Len())
	return out
}

func TestRoundTrip(t *testing.T) {
	c := newTest(t, 3)
	r := rand.New(rand.NewPCG(1, 2))
	lengths := []int{1, 2, 7, testBlock - 1, testBlock, testBlock + 1, 3*testBlock + 5, 200_001}
	for _, kind := range []kvdata.Kind{kvdata.BF16, kvdata.FP8, kvdata.Random} {
		for _, codec := range []Codec{S2, Zstd} {
			for _, elem := range []int{0, 2, 3, 4} {
				for _, n := range lengths {
					name := fmt.Sprintf("%s/%v/elem%d/%d", kind, codec, elem, n)
					t.Run(name, func(t *testing.T) {
						src := payload(t, kind, n, uint64(n))
						frame := encodeBytes(t, c, codec, elem, split(src, r, 1+r.IntN(6)))
						g := newGuarded(n, r, 1+r.IntN(6))
						require.NoError(t, c.Decode(frame, g.parts))
						require.Equal(t, src, g.body())
						g.requireGuards(t)
					})
				}
			}
		}
	}
}

func TestCompressesKV(t *testing.T) {
	c := newTest(t, 2)
	src := payload(t, kvdata.BF16, 1<<20, 7)
	for _, codec := range []Codec{S2, Zstd} {
		plain := len(encodeBytes(t, c, codec, 0, [][]byte{src}))
		shuffled := len(encodeBytes(t, c, codec, 2, [][]byte{src}))
		t.Logf("%v: %.3f plain, %.3f shuffled", codec, float64(plain)/float64(len(src)), float64(shuffled)/float64(len(src)))
		require.Less(t, shuffled, plain, "the byte-plane shuffle must help bf16")
	}
	require.Less(t, len(encodeBytes(t, c, Zstd, 2, [][]byte{src})), len(src)*3/4)
	random := payload(t, kvdata.Random, 1<<20, 7)
	frame := encodeBytes(t, c, S2, 2, [][]byte{random})
	require.LessOrEqual(t, len(frame), len(random)+headerLen+blockEntry*(1<<20/testBlock), "random bytes are stored, not grown")
	st := c.Stats()
	require.Equal(t, uint64(6), st.EncodedFrames)
	require.Equal(t, uint64(2<<20/testBlock), st.StoredBlocks, "s2 on unshuffled bf16 and random bytes are stored")
	require.Equal(t, uint64(6<<20), st.RawIn)
}

func TestShuffleInverse(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 4))
	for _, elem := range []int{0, 1, 2, 3, 4, 8, 16} {
		for _, n := range []int{0, 1, 2, 5, 33, 1000} {
			src := make([]byte, n)
			for i := range src {
				src[i] = byte(r.Uint32())
			}
			sh, back := make([]byte, n), make([]byte, n)
			Shuffle(sh, src, elem)
			Unshuffle(back, sh, elem)
			require.Equal(t, src, back, "elem %d, %d bytes", elem, n)
		}
	}
	sh := make([]byte, 5)
	Shuffle(sh, []byte{1, 2, 3, 4, 5}, 2)
	require.Equal(t, []byte{1, 3, 2, 4, 5}, sh, "low bytes, then high bytes, then the odd tail")
}

func TestConcurrentUse(t *testing.T) {
	c := newTest(t, 2)
	var wg sync.WaitGroup
	for g := range 6 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r := rand.New(rand.NewPCG(uint64(g), 9))
			for i := range 10 {
				n := 1 + r.IntN(5*testBlock)
				src := payload(t, kvdata.BF16, n, uint64(g*100+i))
				frame := encodeBytes(t, c, Codec(1+i%2), 2*(i%2), split(src, r, 4))
				dst := make([]byte, n)
				if err := c.Decode(frame, [][]byte{dst}); err != nil || !bytes.Equal(dst, src) {
					t.Errorf("goroutine %d round %d: %v", g, i, err)
					return
				}
			}
		}()
	}
	wg.Wait()
}

// Allocations do not grow with the number of ranges.
func TestNoAllocationPerRange(t *testing.T) {
	if raceEnabled {
		t.Skip("the race detector allocates on its own")
	}
	c := newTest(t, 1)
	src := payload(t, kvdata.BF16, 1<<20, 1)
	allocs := func(parts int) float64 {
		srcs := make([][]byte, parts)
		per := len(src) / parts
		for i := range srcs {
			srcs[i] = src[i*per : (i+1)*per]
		}
		dst := make([]byte, per*parts)
		var frame []byte
		return testing.AllocsPerRun(20, func() {
			f, err := c.Encode(S2, 2, srcs)
			require.NoError(t, err)
			frame = f.AppendTo(frame[:0])
			f.Release()
			require.NoError(t, c.Decode(frame, [][]byte{dst}))
		})
	}
	few, many := allocs(4), allocs(4096)
	t.Logf("allocations per encode+decode: %.1f with 4 ranges, %.1f with 4096", few, many)
	require.LessOrEqual(t, many, few+1)
	require.LessOrEqual(t, many, 8.0)
}

func TestEncodeRefuses(t *testing.T) {
	c := newTest(t, 1)
	_, err := c.Encode(Off, 0, [][]byte{{1}})
	require.ErrorContains(t, err, "codec off")
	_, err = c.Encode(S2, 17, [][]byte{{1}})
	require.ErrorContains(t, err, "shuffle element of 17 bytes")
}

func TestParseMode(t *testing.T) {
	for s, want := range map[string]Mode{"": ModeOff, "off": ModeOff, "s2": ModeS2, "zstd": ModeZstd, "auto": ModeAuto} {
		m, err := ParseMode(s)
		require.NoError(t, err)
		require.Equal(t, want, m)
	}
	_, err := ParseMode("lz4")
	require.ErrorContains(t, err, `compression "lz4": want off, s2, zstd or auto`)
}

// Planes with runs and repeats still get LZ (zstd), not Huffman alone.
func TestRepeatsStillCompressWhenShuffled(t *testing.T) {
	c := newTest(t, 2)
	periodic := bytes.Repeat(func() []byte {
		b := make([]byte, 256)
		for i := range b {
			b[i] = byte(i)
		}
		return b
	}(), 4096)
	for name, src := range map[string][]byte{"zeros": make([]byte, 1<<20), "periodic": periodic} {
		frame := encodeBytes(t, c, Zstd, 2, [][]byte{src})
		require.Less(t, len(frame), len(src)/20, name)
		dst := make([]byte, len(src))
		require.NoError(t, c.Decode(frame, [][]byte{dst}))
		require.Equal(t, src, dst, name)
	}
}
