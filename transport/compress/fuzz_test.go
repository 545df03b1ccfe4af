package compress

import (
	"bytes"
	"encoding/binary"
	"flag"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
	"testing"

	"github.com/klauspost/compress/s2"
	"github.com/stretchr/testify/require"
)

var writeCorpus = flag.Bool("write-corpus", false, "write the seed corpus under testdata/fuzz")

// seedFrames are valid and hostile frames for the fuzzers to start from.
func seedFrames(t testing.TB) [][]byte {
	c := newTest(t, 1)
	kv := payload(t, "bf16", 2*testBlock+7, 1)
	seeds := [][]byte{}
	for _, codec := range []Codec{S2, Zstd} {
		for _, elem := range []int{0, 2} {
			seeds = append(seeds,
				encodeBytes(t, c, codec, elem, [][]byte{kv}),
				encodeBytes(t, c, codec, elem, [][]byte{bytes.Repeat([]byte{7}, 300)}))
		}
	}
	zeros := make([]byte, 64<<10)
	seeds = append(seeds,
		rawFrame(S2, 0, 100, []int{100}, [][]byte{s2.Encode(nil, zeros)}),
		rawFrame(Zstd, 0, 100, []int{100}, [][]byte{zstdAll(t, zeros)}),
		rawFrame(S2, 2, 100, []int{100}, [][]byte{binary.LittleEndian.AppendUint32(nil, 99)}))
	// The element size varies per registration and per transfer: an odd
	// one and the largest, one past the bound, and a frame shuffled by 2
	// that claims 3.
	odd := encodeBytes(t, c, Zstd, 3, [][]byte{kv})
	tooLarge := append([]byte(nil), odd...)
	tooLarge[4] = MaxElemSize + 1
	claims3 := encodeBytes(t, c, Zstd, 2, [][]byte{kv})
	claims3[4] = 3
	return append(seeds, odd, encodeBytes(t, c, S2, MaxElemSize, [][]byte{kv}), tooLarge, claims3)
}

// frameSize is the raw size a frame claims, kept under 256 KiB so the
// fuzzer stays quick.
func frameSize(frame []byte) int {
	if len(frame) < headerLen {
		return len(frame)
	}
	return int(binary.LittleEndian.Uint64(frame[16:]) % (256<<10 + 1))
}

func FuzzDecode(f *testing.F) {
	for i, s := range seedFrames(f) {
		f.Add(s, uint8(i))
	}
	c := newTest(f, 2)
	f.Fuzz(func(t *testing.T, frame []byte, cut uint8) {
		r := rand.New(rand.NewPCG(uint64(cut), 1))
		g := newGuarded(frameSize(frame), r, 1+int(cut%5))
		if err := c.Decode(frame, g.parts); err != nil {
			require.ErrorIs(t, err, ErrCorrupt)
		}
		g.requireGuards(t)
	})
}

func FuzzRoundTrip(f *testing.F) {
	f.Add([]byte("bf16 bf16 bf16 bf16 kv"), uint8(1), uint8(2), uint8(3))
	f.Add(bytes.Repeat([]byte{0, 1, 2}, 20000), uint8(2), uint8(0), uint8(9))
	c := newTest(f, 2)
	f.Fuzz(func(t *testing.T, data []byte, codec, elem, cut uint8) {
		r := rand.New(rand.NewPCG(uint64(cut), 2))
		frame := encodeBytes(t, c, Codec(1+codec%2), int(elem)%(MaxElemSize+1), split(data, r, 1+int(cut%7)))
		g := newGuarded(len(data), r, 1+int(cut%3))
		require.NoError(t, c.Decode(frame, g.parts))
		require.Equal(t, data, g.body())
		g.requireGuards(t)
	})
}

// TestWriteSeedCorpus writes the seeds as files when run with
// -args -write-corpus (the corpus is checked in).
func TestWriteSeedCorpus(t *testing.T) {
	if !*writeCorpus {
		t.Skip("run with -args -write-corpus to rewrite testdata/fuzz/FuzzDecode")
	}
	dir := filepath.Join("testdata", "fuzz", "FuzzDecode")
	require.NoError(t, os.MkdirAll(dir, 0o755))
	for i, s := range seedFrames(t) {
		body := fmt.Sprintf("go test fuzz v1\n[]byte(%s)\nuint8(%d)\n", strconv.Quote(string(s)), i)
		require.NoError(t, os.WriteFile(filepath.Join(dir, fmt.Sprintf("seed-%02d", i)), []byte(body), 0o644))
	}
}
