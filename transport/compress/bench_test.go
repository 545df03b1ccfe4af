package compress

import (
	"fmt"
	"testing"

	"github.com/mori-go/mori-go/internal/kvdata"
)

// BenchmarkEncode and BenchmarkDecode report MB/s of raw bytes for 1 MiB
// frames of bf16 K/V (one worker: a core's speed).
func BenchmarkEncode(b *testing.B) {
	for _, codec := range []Codec{S2, Zstd} {
		for _, elem := range []int{0, 2} {
			b.Run(fmt.Sprintf("%v/elem%d", codec, elem), func(b *testing.B) {
				c, _ := New(Options{Workers: 1})
				defer c.Close()
				src := payload(b, kvdata.BF16, 1<<20, 1)
				b.SetBytes(int64(len(src)))
				for b.Loop() {
					f, _ := c.Encode(codec, elem, [][]byte{src})
					f.Release()
				}
			})
		}
	}
}

func BenchmarkDecode(b *testing.B) {
	for _, codec := range []Codec{S2, Zstd} {
		b.Run(codec.String(), func(b *testing.B) {
			c, _ := New(Options{Workers: 1})
			defer c.Close()
			src := payload(b, kvdata.BF16, 1<<20, 1)
			frame := encodeBytes(b, c, codec, 2, [][]byte{src})
			dst := make([]byte, len(src))
			b.SetBytes(int64(len(src)))
			for b.Loop() {
				_ = c.Decode(frame, [][]byte{dst})
			}
		})
	}
}

func BenchmarkShuffle2(b *testing.B) {
	src := payload(b, kvdata.BF16, 1<<20, 1)
	dst := make([]byte, len(src))
	b.SetBytes(int64(len(src)))
	for b.Loop() {
		Shuffle(dst, src, 2)
	}
}
