package gpu_test

// Checks shared by the stand-in tests (standin_test.go) and the real-GPU
// tests (real_test.go). strict is true for the stand-in, whose allocator is
// deterministic (consecutive allocations are adjacent, the tail of an
// allocation that is not a page multiple belongs to nothing, copies that
// overrun an allocation fail); a real driver promises none of that.

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"os"
	"sync"
	"syscall"
	"testing"
	"unsafe"

	"github.com/mori-go/mori-go/gpu"
	"github.com/stretchr/testify/require"
)

const page = 4096

func testLogger(tb testing.TB) *slog.Logger {
	return slog.New(slog.NewTextHandler(tb.Output(), &slog.HandlerOptions{Level: slog.LevelDebug}))
}

// addr is the address of b's first byte.
func addr(b []byte) uintptr { return uintptr(unsafe.Pointer(&b[0])) }

// randomBytes returns n reproducible pseudo-random bytes.
func randomBytes(n int, seed uint64) []byte {
	r := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	return b
}

// allocDevice allocates device memory that is freed when the test ends.
func allocDevice(tb testing.TB, d *gpu.Driver, n uint64, device int) uintptr {
	tb.Helper()
	p, err := d.AllocDevice(n, device)
	require.NoError(tb, err)
	tb.Cleanup(func() { require.NoError(tb, d.FreeDevice(p)) })
	return p
}

func allocPinned(tb testing.TB, d *gpu.Driver, n int, dev int) []byte {
	tb.Helper()
	buf, free, err := d.AllocPinned(n, dev)
	require.NoError(tb, err)
	require.Len(tb, buf, n)
	tb.Cleanup(func() { require.NoError(tb, free()) })
	return buf
}

func checkPointerInfo(t *testing.T, d *gpu.Driver, dev int) {
	p := allocDevice(t, d, 3*page, dev)
	info, err := d.PointerInfo(p + 100)
	require.NoError(t, err)
	require.Equal(t, gpu.PointerInfo{IsDevice: true, Device: dev, AllocBase: p, AllocSize: 3 * page}, info)

	host := make([]byte, 64)
	info, err = d.PointerInfo(addr(host))
	require.NoError(t, err)
	require.Equal(t, gpu.PointerInfo{Device: -1}, info)

	pinned := allocPinned(t, d, page, dev)
	info, err = d.PointerInfo(addr(pinned))
	require.NoError(t, err)
	require.False(t, info.IsDevice, "page-locked host memory is not device memory")
}

func checkDeviceRanges(t *testing.T, d *gpu.Driver, dev int, strict bool) {
	p := allocDevice(t, d, 2*page, dev)
	require.NoError(t, d.CheckDeviceRange(p, 2*page, dev))
	require.NoError(t, d.CheckDeviceRange(p+10, 100, dev))

	t.Run("wrong device", func(t *testing.T) {
		if d.DeviceCount() < 2 {
			err := d.CheckDeviceRange(p, page, dev+1)
			require.ErrorContains(t, err, "no such device")
			return
		}
		other := (dev + 1) % d.DeviceCount()
		err := d.CheckDeviceRange(p, page, other)
		require.EqualError(t, err, fmt.Sprintf("gpu range %#x+%d on device %d: belongs to device %d", p, page, other, dev))
	})
	t.Run("host memory", func(t *testing.T) {
		host := addr(make([]byte, page)) // only queried, never dereferenced
		err := d.CheckDeviceRange(host, page, dev)
		require.EqualError(t, err, fmt.Sprintf("gpu range %#x+%d on device %d: pointer is host memory", host, page, dev))
		pinned := allocPinned(t, d, page, dev)
		require.ErrorContains(t, d.CheckDeviceRange(addr(pinned), page, dev), "pointer is host memory")
	})
	t.Run("null and empty", func(t *testing.T) {
		require.ErrorContains(t, d.CheckDeviceRange(0, page, dev), "null pointer")
		require.ErrorContains(t, d.CheckDeviceRange(p, 0, dev), "empty range")
		require.ErrorContains(t, d.CheckDeviceRange(p, ^uint64(0), dev), "wraps around")
	})
	t.Run("spans two allocations", func(t *testing.T) {
		a := allocDevice(t, d, page, dev)
		b := allocDevice(t, d, page, dev)
		if b != a+page {
			require.False(t, strict, "stand-in allocations must be adjacent")
			t.Skipf("driver placed the allocations apart (%#x, %#x)", a, b)
		}
		err := d.CheckDeviceRange(a+page/2, page, dev)
		require.EqualError(t, err, fmt.Sprintf("gpu range %#x+%d on device %d: spans allocations (allocation %#x+%d ends before range end)",
			a+page/2, page, dev, a, page))
	})
	t.Run("past the end", func(t *testing.T) {
		c := allocDevice(t, d, 1000, dev)
		require.NoError(t, d.CheckDeviceRange(c, 1000, dev))
		err := d.CheckDeviceRange(c, 2000, dev)
		require.Error(t, err)
		if strict {
			require.EqualError(t, err, fmt.Sprintf("gpu range %#x+2000 on device %d: extends past the end of allocation %#x+1000", c, dev, c))
		} else {
			require.Regexp(t, "extends past the end of allocation|spans allocations", err.Error())
		}
	})
}

func checkCopies(t *testing.T, d *gpu.Driver, dev int, strict bool) {
	const n = 1<<20 + 123
	data := randomBytes(n, 1)
	src := allocDevice(t, d, n, dev)
	require.NoError(t, d.CopyFromHost(src, data, dev))

	out := make([]byte, n)
	require.NoError(t, d.CopyToHost(out, src, dev))
	require.True(t, bytes.Equal(data, out), "device to host copy differs")

	part := make([]byte, 100)
	require.NoError(t, d.CopyToHost(part, src+5000, dev))
	require.Equal(t, data[5000:5100], part)

	dst := allocDevice(t, d, n, dev)
	require.NoError(t, d.CopyDeviceToDevice(dst, src, n, dev))
	pinned := allocPinned(t, d, n, dev)
	require.NoError(t, d.CopyToHost(pinned, dst, dev))
	require.True(t, bytes.Equal(data, pinned), "device to device copy differs")

	require.NoError(t, d.CopyToHost(nil, src, dev), "empty copies are no-ops")
	if strict {
		require.Error(t, d.CopyToHost(make([]byte, n+page), src, dev), "copy past the allocation")
		require.Error(t, d.CopyFromHost(src+n-10, make([]byte, 20), dev), "copy past the allocation")
	}
	require.Error(t, d.CopyToHost(out, src, d.DeviceCount()), "no such device")
}

func checkConcurrentCopies(t *testing.T, d *gpu.Driver, dev int) {
	const workers, n = 8, 64 << 10
	var wg sync.WaitGroup
	errs := make(chan error, workers)
	for w := range workers {
		p := allocDevice(t, d, n, dev)
		wg.Go(func() {
			data := randomBytes(n, uint64(w))
			out := make([]byte, n)
			for range 20 {
				if err := d.CopyFromHost(p, data, dev); err != nil {
					errs <- err
					return
				}
				if err := d.CopyToHost(out, p, dev); err != nil {
					errs <- err
					return
				}
				if !bytes.Equal(data, out) {
					errs <- fmt.Errorf("worker %d: data differs", w)
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		require.NoError(t, err)
	}
}

func checkStager(t *testing.T, d *gpu.Driver, dev int, slotSize int) {
	n := 5*slotSize + 123 // six chunks through three slots: each slot is reused
	data := randomBytes(n, 2)
	p := allocDevice(t, d, uint64(n), dev)
	s, err := gpu.NewStager(d, dev, 3, slotSize)
	require.NoError(t, err)
	defer func() { require.NoError(t, s.Close()) }()
	require.Equal(t, slotSize, s.SlotSize())

	r := bytes.NewReader(data)
	var sizes []int
	require.NoError(t, s.WriteDevice(p, uint64(n), func(b []byte) error {
		sizes = append(sizes, len(b))
		_, err := io.ReadFull(r, b)
		return err
	}))
	require.Equal(t, []int{slotSize, slotSize, slotSize, slotSize, slotSize, 123}, sizes)
	check := make([]byte, n)
	require.NoError(t, d.CopyToHost(check, p, dev))
	require.True(t, bytes.Equal(data, check), "WriteDevice result differs")

	var got bytes.Buffer
	require.NoError(t, s.ReadDevice(p, uint64(n), func(b []byte) error {
		got.Write(b)
		return nil
	}))
	require.True(t, bytes.Equal(data, got.Bytes()), "ReadDevice result differs")

	// A consumer or producer error ends the transfer; the Stager stays usable.
	stop := errors.New("stop")
	calls := 0
	err = s.ReadDevice(p, uint64(n), func([]byte) error {
		calls++
		if calls == 2 {
			return stop
		}
		return nil
	})
	require.ErrorIs(t, err, stop)
	require.Equal(t, 2, calls)
	require.ErrorIs(t, s.WriteDevice(p, uint64(n), func([]byte) error { return stop }), stop)
	got.Reset()
	require.NoError(t, s.ReadDevice(p+1, 1000, func(b []byte) error {
		got.Write(b)
		return nil
	}))
	require.Equal(t, data[1:1001], got.Bytes())
}

func checkDmabuf(t *testing.T, d *gpu.Driver, dev int) {
	p := allocDevice(t, d, 4*page, dev)
	fd, off, err := d.DmabufFD(p+100, 5000)
	if errors.Is(err, gpu.ErrNotSupported) {
		t.Skipf("dma-buf export not supported: %v", err)
	}
	require.NoError(t, err)
	require.GreaterOrEqual(t, fd, 0)
	require.Equal(t, uint64((p+100)%uintptr(os.Getpagesize())), off)
	require.NoError(t, syscall.Close(fd))

	host := make([]byte, page)
	_, _, err = d.DmabufFD(addr(host), page)
	require.ErrorContains(t, err, "host memory")
}

// checkStagedSpans moves a gather list through the Driver's pooled Stagers
// (ReadStaged, WriteStaged): spans of odd sizes, some shorter than a slot,
// some longer, one empty, so that chunks straddle span boundaries.
func checkStagedSpans(t *testing.T, d *gpu.Driver, dev int) {
	sizes := []uint64{1, 4096, 0, 300000, 70000, 5, 150000}
	var spans []gpu.Span
	var total uint64
	for _, n := range sizes {
		p := allocDevice(t, d, max(n, 1), dev)
		spans = append(spans, gpu.Span{Addr: p, Size: n})
		total += n
	}
	data := randomBytes(int(total), 5)
	r := bytes.NewReader(data)
	require.NoError(t, d.WriteStaged(dev, spans, func(b []byte) error {
		_, err := io.ReadFull(r, b)
		return err
	}))
	var off uint64
	for _, sp := range spans {
		got := make([]byte, sp.Size)
		require.NoError(t, d.CopyToHost(got, sp.Addr, dev))
		require.True(t, bytes.Equal(data[off:off+sp.Size], got), "span at %d differs after WriteStaged", off)
		off += sp.Size
	}
	var back bytes.Buffer
	require.NoError(t, d.ReadStaged(dev, spans, func(b []byte) error {
		back.Write(b)
		return nil
	}))
	require.True(t, bytes.Equal(data, back.Bytes()), "ReadStaged result differs")

	// Concurrent staged transfers borrow different Stagers.
	var wg sync.WaitGroup
	errs := make(chan error, 3)
	for range 3 {
		wg.Go(func() {
			var buf bytes.Buffer
			if err := d.ReadStaged(dev, spans, func(b []byte) error { buf.Write(b); return nil }); err != nil {
				errs <- err
				return
			}
			if !bytes.Equal(data, buf.Bytes()) {
				errs <- errors.New("concurrent ReadStaged differs")
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		require.NoError(t, err)
	}

	stop := errors.New("stop")
	require.ErrorIs(t, d.ReadStaged(dev, spans, func([]byte) error { return stop }), stop)
	require.ErrorIs(t, d.WriteStaged(dev, spans, func([]byte) error { return stop }), stop)
	require.NoError(t, d.ReadStaged(dev, nil, nil), "nothing to copy")
	require.Error(t, d.ReadStaged(d.DeviceCount(), spans, nil), "no such device")
	require.ErrorContains(t, d.ReadStaged(dev, []gpu.Span{{Addr: ^uintptr(0) - 10, Size: 100}}, nil), "wraps")
}

// checkCopyDeviceBatch copies several ranges between two allocations with
// one wait.
func checkCopyDeviceBatch(t *testing.T, d *gpu.Driver, dev int) {
	const n = 64 << 10
	data := randomBytes(n, 6)
	src := allocDevice(t, d, n, dev)
	dst := allocDevice(t, d, n, dev)
	require.NoError(t, d.CopyFromHost(src, data, dev))
	require.NoError(t, d.CopyFromHost(dst, make([]byte, n), dev))
	copies := []gpu.Copy{
		{Dst: dst + 100, Src: src, Size: 1000},
		{Dst: dst + 8192, Src: src + 5000, Size: 20000},
		{Dst: dst, Src: src, Size: 0},
		{Dst: dst + n - 7, Src: src + n - 7, Size: 7},
	}
	require.NoError(t, d.CopyDeviceBatch(dev, copies))
	got := make([]byte, n)
	require.NoError(t, d.CopyToHost(got, dst, dev))
	want := make([]byte, n)
	for _, c := range copies {
		copy(want[c.Dst-dst:], data[c.Src-src:c.Src-src+uintptr(c.Size)])
	}
	require.True(t, bytes.Equal(want, got), "batched copies differ")
	require.NoError(t, d.CopyDeviceBatch(dev, nil))
}
