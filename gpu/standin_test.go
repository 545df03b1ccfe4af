package gpu_test

// Tests against the stand-in driver in testdata/standin: a small C library,
// compiled by each test into its own temporary directory (so each test gets
// fresh driver state; see internal/standin), that implements the CUDA driver API and HIP runtime
// calls package gpu makes over host memory. They run on any machine with
// gcc and check the package's own logic: dlopen and symbol loading, context
// and device switching, pointer queries and range checks, stream use,
// staging, IPC offsets.

import (
	"bytes"
	"errors"
	"log/slog"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/mori-go/mori-go/core"
	"github.com/mori-go/mori-go/gpu"
	"github.com/mori-go/mori-go/internal/standin"
	"github.com/stretchr/testify/require"
)

// buildStandin compiles the stand-in driver with the given extra gcc
// arguments and returns the path of the shared library.
func buildStandin(t *testing.T, args ...string) string {
	t.Helper()
	return standin.Build(t, args...)
}

func openStandin(t *testing.T, vendor gpu.Vendor) *gpu.Driver {
	t.Helper()
	d, err := gpu.Open(gpu.Options{Library: buildStandin(t), Vendor: vendor, Logger: testLogger(t)})
	require.NoError(t, err)
	t.Cleanup(func() { require.NoError(t, d.Close()) })
	require.Equal(t, vendor, d.Vendor())
	return d
}

// eachVendor runs f against the stand-in as a CUDA driver and as a HIP
// runtime.
func eachVendor(t *testing.T, f func(t *testing.T, d *gpu.Driver)) {
	for _, v := range []gpu.Vendor{gpu.VendorNVIDIA, gpu.VendorAMD} {
		t.Run(v.String(), func(t *testing.T) { f(t, openStandin(t, v)) })
	}
}

func TestVendorString(t *testing.T) {
	require.Equal(t, "none", gpu.VendorNone.String())
	require.Equal(t, "nvidia", gpu.VendorNVIDIA.String())
	require.Equal(t, "amd", gpu.VendorAMD.String())
	require.Equal(t, "Vendor(7)", gpu.Vendor(7).String())
}

func TestOpenStandin(t *testing.T) {
	lib := buildStandin(t)
	var logs bytes.Buffer
	logger := slog.New(slog.NewTextHandler(&logs, nil))
	d, err := gpu.Open(gpu.Options{Library: lib, Logger: logger})
	require.NoError(t, err)
	require.Equal(t, gpu.VendorNVIDIA, d.Vendor(), "told from the cuInit symbol")
	require.Equal(t, 2, d.DeviceCount())
	require.NoError(t, d.Close())
	require.NoError(t, d.Close(), "Close is idempotent")
	require.Contains(t, logs.String(), "gpu: driver opened")
	require.Contains(t, logs.String(), "vendor=nvidia")

	// A second Open of a library that is already loaded reuses it.
	logs.Reset()
	d, err = gpu.Open(gpu.Options{Library: lib, Vendor: gpu.VendorAMD, Logger: logger})
	require.NoError(t, err)
	require.Equal(t, gpu.VendorAMD, d.Vendor())
	require.Contains(t, logs.String(), "already_loaded=true")
	require.NoError(t, d.Close())
}

func TestOpenMissingLibrary(t *testing.T) {
	missing := filepath.Join(t.TempDir(), "libcuda.so.1")
	for _, v := range []gpu.Vendor{gpu.VendorNone, gpu.VendorNVIDIA, gpu.VendorAMD} {
		_, err := gpu.Open(gpu.Options{Library: missing, Vendor: v})
		require.ErrorIs(t, err, gpu.ErrNotSupported, "vendor %v", v)
		require.ErrorIs(t, err, core.ErrNotSupported, "the project's one ErrNotSupported, vendor %v", v)
		require.ErrorContains(t, err, missing)
	}
}

func TestOpenWrongLibrary(t *testing.T) {
	// libc is loaded in every cgo process and has neither API.
	_, err := gpu.Open(gpu.Options{Library: "libc.so.6"})
	require.ErrorIs(t, err, gpu.ErrNotSupported)
	require.ErrorContains(t, err, "neither cuInit nor hipInit")

	_, err = gpu.Open(gpu.Options{Library: "libc.so.6", Vendor: gpu.VendorNVIDIA})
	require.ErrorIs(t, err, gpu.ErrNotSupported)
	require.ErrorContains(t, err, "has no cuInit")

	_, err = gpu.Open(gpu.Options{Library: "libc.so.6", Vendor: gpu.VendorAMD})
	require.ErrorIs(t, err, gpu.ErrNotSupported)
	require.ErrorContains(t, err, "has no hipInit")

	_, err = gpu.Open(gpu.Options{Vendor: gpu.Vendor(9)})
	require.ErrorContains(t, err, "unknown vendor")
}

func TestOpenNoDevice(t *testing.T) {
	lib := buildStandin(t, "-DSTANDIN_NO_DEVICE")
	for _, v := range []gpu.Vendor{gpu.VendorNVIDIA, gpu.VendorAMD} {
		_, err := gpu.Open(gpu.Options{Library: lib, Vendor: v})
		require.ErrorIs(t, err, gpu.ErrNotSupported, "vendor %v", v)
	}
}

func TestPointerInfo(t *testing.T) {
	eachVendor(t, func(t *testing.T, d *gpu.Driver) {
		checkPointerInfo(t, d, 0)
		checkPointerInfo(t, d, 1)
	})
}

func TestCheckDeviceRange(t *testing.T) {
	eachVendor(t, func(t *testing.T, d *gpu.Driver) {
		checkDeviceRanges(t, d, 1, true)
		require.ErrorContains(t, d.CheckDeviceRange(0x1000, 1, 2), "no such device (2 devices)")
	})
}

func TestCopies(t *testing.T) {
	eachVendor(t, func(t *testing.T, d *gpu.Driver) {
		checkCopies(t, d, 0, true)
		checkCopyDeviceBatch(t, d, 0)
		checkCopies(t, d, 1, true)
	})
}

func TestConcurrentCopies(t *testing.T) {
	eachVendor(t, func(t *testing.T, d *gpu.Driver) {
		checkConcurrentCopies(t, d, 1)
	})
}

func TestStager(t *testing.T) {
	eachVendor(t, func(t *testing.T, d *gpu.Driver) {
		checkStager(t, d, 1, 64<<10)
		checkStager(t, d, 0, 1000) // slots smaller than a page, odd sizes
	})
}

func TestStagerArgs(t *testing.T) {
	d := openStandin(t, gpu.VendorNVIDIA)
	_, err := gpu.NewStager(d, 0, 0, 4096)
	require.Error(t, err)
	_, err = gpu.NewStager(d, 0, 2, 0)
	require.Error(t, err)
	_, err = gpu.NewStager(d, 5, 2, 4096)
	require.ErrorContains(t, err, "no device 5")

	s, err := gpu.NewStager(d, 0, 2, 4096)
	require.NoError(t, err)
	require.NoError(t, s.ReadDevice(0, 0, nil), "empty transfers are no-ops")
	require.NoError(t, s.Close())
	require.NoError(t, s.Close())
	require.ErrorContains(t, s.ReadDevice(0x1000, 1, nil), "closed")
}

func TestIPC(t *testing.T) {
	eachVendor(t, func(t *testing.T, d *gpu.Driver) {
		const n = 3 * page
		data := randomBytes(n, 3)
		p := allocDevice(t, d, n, 1)
		require.NoError(t, d.CopyFromHost(p, data, 1))

		h, off, err := d.IPCExport(p + 1000)
		require.NoError(t, err)
		require.Equal(t, uint64(1000), off)

		// The stand-in, unlike CUDA and HIP, lets a process open its own
		// handles; it maps the allocation again at another address.
		q, closeIPC, err := d.IPCOpen(h, off, 1)
		require.NoError(t, err)
		require.NotEqual(t, p+1000, q)
		info, err := d.PointerInfo(q)
		require.NoError(t, err)
		require.Equal(t, uint64(1000), uint64(q-info.AllocBase), "opened pointer keeps the offset")

		got := make([]byte, 100)
		require.NoError(t, d.CopyToHost(got, q, 1))
		require.Equal(t, data[1000:1100], got)
		require.NoError(t, d.CopyFromHost(q, []byte("written through the IPC mapping"), 1))
		got = make([]byte, 31)
		require.NoError(t, d.CopyToHost(got, p+1000, 1))
		require.Equal(t, "written through the IPC mapping", string(got))

		require.NoError(t, closeIPC())
		require.Error(t, closeIPC(), "second close")

		_, _, err = d.IPCOpen(h, n, 1)
		require.ErrorContains(t, err, "outside the")
		_, _, err = d.IPCOpen(gpu.IPCHandle{}, 0, 1)
		require.Error(t, err, "zero handle")
		_, _, err = d.IPCExport(addr(data))
		require.ErrorContains(t, err, "host memory")
	})
}

func TestDmabuf(t *testing.T) {
	eachVendor(t, func(t *testing.T, d *gpu.Driver) {
		checkDmabuf(t, d, 0)
	})
}

func TestDmabufUnsupported(t *testing.T) {
	lib := buildStandin(t, "-DSTANDIN_NO_DMABUF")
	for _, v := range []gpu.Vendor{gpu.VendorNVIDIA, gpu.VendorAMD} {
		d, err := gpu.Open(gpu.Options{Library: lib, Vendor: v})
		require.NoError(t, err)
		p, err := d.AllocDevice(page, 0)
		require.NoError(t, err)
		_, _, err = d.DmabufFD(p, page)
		require.ErrorIs(t, err, gpu.ErrNotSupported, "vendor %v", v)
		require.ErrorIs(t, err, core.ErrNotSupported, "a missing driver symbol is core's not supported, vendor %v", v)
		require.NoError(t, d.FreeDevice(p))
		require.NoError(t, d.Close())
	}
}

func TestAllocPinned(t *testing.T) {
	eachVendor(t, func(t *testing.T, d *gpu.Driver) {
		buf, free, err := d.AllocPinned(10000, 1)
		require.NoError(t, err)
		copy(buf, strings.Repeat("x", 10000))
		require.Equal(t, byte('x'), buf[9999])
		require.NoError(t, free())
		require.Error(t, free(), "second free")
		_, _, err = d.AllocPinned(0, 0)
		require.Error(t, err)
	})
}

func TestFreeDevice(t *testing.T) {
	d := openStandin(t, gpu.VendorNVIDIA)
	p, err := d.AllocDevice(page, 0)
	require.NoError(t, err)
	require.ErrorContains(t, d.FreeDevice(p+1), "not the start")
	require.NoError(t, d.FreeDevice(p))
	require.Error(t, d.FreeDevice(p), "already freed")
	_, err = d.AllocDevice(0, 0)
	require.Error(t, err)
}

func TestClosedDriver(t *testing.T) {
	d, err := gpu.Open(gpu.Options{Library: buildStandin(t), Vendor: gpu.VendorNVIDIA})
	require.NoError(t, err)
	p, err := d.AllocDevice(page, 0)
	require.NoError(t, err)
	require.NoError(t, d.CopyToHost(make([]byte, 10), p, 0)) // leaves a pooled stream for Close
	require.NoError(t, d.Close())

	_, err = d.PointerInfo(p)
	require.Error(t, err)
	require.Error(t, d.CheckDeviceRange(p, 1, 0))
	require.Error(t, d.CopyToHost(make([]byte, 10), p, 0))
	_, _, err = d.AllocPinned(10, 0)
	require.Error(t, err)
	_, err = gpu.NewStager(d, 0, 2, 10)
	require.Error(t, err)
	require.True(t, !errors.Is(err, gpu.ErrNotSupported), "closed is not unsupported")
}

func TestStagedSpans(t *testing.T) {
	eachVendor(t, func(t *testing.T, d *gpu.Driver) {
		checkStagedSpans(t, d, 1)
	})
}

func TestStagingOptions(t *testing.T) {
	lib := buildStandin(t)
	_, err := gpu.Open(gpu.Options{Library: lib, StagingSlots: -1})
	require.ErrorContains(t, err, "must not be negative")

	// One slot of 1000 bytes: every chunk waits for the previous one, and
	// the stand-in, which runs copies only when a stream is synchronized,
	// catches a slot reused too early.
	d, err := gpu.Open(gpu.Options{Library: lib, StagingSlots: 1, StagingSlotSize: 1000})
	require.NoError(t, err)
	t.Run("one small slot", func(t *testing.T) { checkStagedSpans(t, d, 0) })
	require.NoError(t, d.Close())
	require.ErrorContains(t, d.ReadStaged(0, []gpu.Span{{Addr: 0x1000, Size: 1}}, nil), "closed")
}

func TestCloseWaitsForStaging(t *testing.T) {
	d, err := gpu.Open(gpu.Options{Library: buildStandin(t)})
	require.NoError(t, err)
	p, err := d.AllocDevice(1<<20, 0)
	require.NoError(t, err)
	inside, release := make(chan struct{}), make(chan struct{})
	done := make(chan error, 1)
	go func() {
		first := true
		done <- d.ReadStaged(0, []gpu.Span{{Addr: p, Size: 1 << 20}}, func([]byte) error {
			if first {
				first = false
				close(inside)
				<-release
			}
			return nil
		})
	}()
	<-inside
	closed := make(chan error, 1)
	go func() { closed <- d.Close() }()
	select {
	case <-closed:
		t.Fatal("Close returned while a staged copy was in progress")
	case <-time.After(50 * time.Millisecond):
	}
	close(release)
	require.NoError(t, <-done)
	require.NoError(t, <-closed)
}

func TestCopyDeviceBatch(t *testing.T) {
	eachVendor(t, func(t *testing.T, d *gpu.Driver) {
		checkCopyDeviceBatch(t, d, 1)
		p := allocDevice(t, d, page, 1)
		err := d.CopyDeviceBatch(1, []gpu.Copy{{Dst: p, Src: p + page, Size: 10}, {Dst: p, Src: p, Size: 1}})
		require.ErrorContains(t, err, "copy 1 of 2", "a copy outside any allocation fails")
	})
}

func TestIPCMap(t *testing.T) {
	eachVendor(t, func(t *testing.T, d *gpu.Driver) {
		const n = 3*page + 100
		data := randomBytes(n, 7)
		p := allocDevice(t, d, n, 0)
		require.NoError(t, d.CopyFromHost(p, data, 0))
		h, off, err := d.IPCExport(p + 2*page)
		require.NoError(t, err)
		require.Equal(t, uint64(2*page), off)

		base, size, unmap, err := d.IPCMap(h, 1)
		require.NoError(t, err)
		require.Equal(t, uint64(n), size, "the whole allocation is mapped")
		got := make([]byte, 100)
		require.NoError(t, d.CopyToHost(got, base+uintptr(off), 0))
		require.Equal(t, data[off:off+100], got)

		base2, _, unmap2, err := d.IPCMap(h, 1)
		if d.Vendor() == gpu.VendorNVIDIA {
			// CUDA refcounts a second open: the same address, one more
			// reference; the mapping lasts until the last unmap.
			require.NoError(t, err)
			require.Equal(t, base, base2)
			require.NoError(t, unmap2())
			require.NoError(t, d.CopyToHost(got, base+uintptr(off), 0), "still mapped after one of two unmaps")
			require.Equal(t, data[off:off+100], got)
		} else {
			require.Error(t, err, "HIP (as modelled) maps a handle once per process")
		}
		require.NoError(t, unmap())
		require.Error(t, unmap())
		require.Error(t, d.CopyToHost(got, base+uintptr(off), 0), "unmapped after the last unmap")
		_, _, unmap, err = d.IPCMap(h, 1)
		require.NoError(t, err, "mapped again once unmapped")
		require.NoError(t, unmap())
	})
}

func TestIPCStrict(t *testing.T) {
	d, err := gpu.Open(gpu.Options{Library: buildStandin(t, "-DSTANDIN_STRICT_IPC")})
	require.NoError(t, err)
	t.Cleanup(func() { require.NoError(t, d.Close()) })
	p := allocDevice(t, d, page, 0)
	h, _, err := d.IPCExport(p)
	require.NoError(t, err)
	_, _, _, err = d.IPCMap(h, 0)
	require.ErrorContains(t, err, "invalid device context", "own handles are refused, as by CUDA")
}

func TestExportDmabuf(t *testing.T) {
	d := openStandin(t, gpu.VendorNVIDIA)
	p := allocDevice(t, d, 2*page, 1)
	fd, off, err := d.ExportDmabuf(p+10, page, 1)
	require.NoError(t, err)
	require.Equal(t, uint64(10), off)
	require.NoError(t, syscall.Close(fd))
	_, _, err = d.ExportDmabuf(p, page, 0)
	require.ErrorContains(t, err, "memory of device 1, not 0")
}

func TestPCIBusID(t *testing.T) {
	eachVendor(t, func(t *testing.T, d *gpu.Driver) {
		id, err := d.PCIBusID(1)
		require.NoError(t, err)
		require.Equal(t, "0000:3C:00.0", id)
		_, err = d.PCIBusID(2)
		require.Error(t, err)
	})
}
