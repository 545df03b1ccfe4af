package gpu_test

// Benchmarks of the real GPU path; they skip without a GPU driver.
// go test -run '^$' -bench . ./gpu/

import (
	"fmt"
	"testing"

	"github.com/mori-go/mori-go/gpu"
	"github.com/stretchr/testify/require"
)

var benchSizes = []int{64 << 10, 1 << 20, 16 << 20, 256 << 20}

func sizeName(n int) string {
	if n >= 1<<20 {
		return fmt.Sprintf("%dMiB", n>>20)
	}
	return fmt.Sprintf("%dKiB", n>>10)
}

// benchHost runs f for each size with a pageable and a pinned host buffer.
func benchHost(b *testing.B, f func(b *testing.B, d *gpu.Driver, host []byte, dev uintptr)) {
	d := openReal(b)
	for _, n := range benchSizes {
		p := allocDevice(b, d, uint64(n), 0)
		for _, kind := range []string{"pageable", "pinned"} {
			b.Run(sizeName(n)+"/"+kind, func(b *testing.B) {
				host := make([]byte, n)
				if kind == "pinned" {
					host = allocPinned(b, d, n, 0)
				}
				b.SetBytes(int64(n))
				f(b, d, host, p)
			})
		}
	}
}

func BenchmarkCopyToHost(b *testing.B) {
	benchHost(b, func(b *testing.B, d *gpu.Driver, host []byte, dev uintptr) {
		for b.Loop() {
			require.NoError(b, d.CopyToHost(host, dev, 0))
		}
	})
}

func BenchmarkCopyFromHost(b *testing.B) {
	benchHost(b, func(b *testing.B, d *gpu.Driver, host []byte, dev uintptr) {
		for b.Loop() {
			require.NoError(b, d.CopyFromHost(dev, host, 0))
		}
	})
}

func BenchmarkCopyDeviceToDevice(b *testing.B) {
	d := openReal(b)
	for _, n := range benchSizes {
		src := allocDevice(b, d, uint64(n), 0)
		dst := allocDevice(b, d, uint64(n), 0)
		b.Run(sizeName(n), func(b *testing.B) {
			b.SetBytes(int64(n))
			for b.Loop() {
				require.NoError(b, d.CopyDeviceToDevice(dst, src, uint64(n), 0))
			}
		})
	}
}

// BenchmarkStager moves 256 MiB through Stagers of different slot sizes;
// the consumer and producer copy each chunk, as a socket write would.
func BenchmarkStager(b *testing.B) {
	d := openReal(b)
	const n = 256 << 20
	p := allocDevice(b, d, n, 0)
	for _, slot := range []int{1 << 20, 4 << 20, 16 << 20} {
		s, err := gpu.NewStager(d, 0, 4, slot)
		require.NoError(b, err)
		b.Cleanup(func() { require.NoError(b, s.Close()) })
		sink := make([]byte, slot)
		b.Run("read/slot="+sizeName(slot), func(b *testing.B) {
			b.SetBytes(n)
			for b.Loop() {
				require.NoError(b, s.ReadDevice(p, n, func(c []byte) error { copy(sink, c); return nil }))
			}
		})
		b.Run("write/slot="+sizeName(slot), func(b *testing.B) {
			b.SetBytes(n)
			for b.Loop() {
				require.NoError(b, s.WriteDevice(p, n, func(c []byte) error { copy(c, sink); return nil }))
			}
		})
	}
}
