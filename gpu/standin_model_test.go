package gpu_test

// Tests of what the stand-in driver models as the real drivers behave
// (issue 18: what hid the bugs): pointer queries that need a context, CUDA's
// refcounted IPC opens, HIP's dma-buf of the whole allocation, VMM mappings
// in chunks, event polling, sticky errors, NVIDIA's proprietary modules
// without dma-buf. Each fails against the code before its fix.

import (
	"bytes"
	"errors"
	"syscall"
	"testing"

	"github.com/mori-go/mori-go/core"
	"github.com/mori-go/mori-go/gpu"
	"github.com/mori-go/mori-go/internal/standin"
	"github.com/stretchr/testify/require"
)

// openLib opens the stand-in at lib as vendor's driver.
func openLib(t *testing.T, lib string, vendor gpu.Vendor, opts gpu.Options) *gpu.Driver {
	t.Helper()
	opts.Library, opts.Vendor, opts.Logger = lib, vendor, testLogger(t)
	d, err := gpu.Open(opts)
	require.NoError(t, err)
	t.Cleanup(func() { require.NoError(t, d.Close()) })
	return d
}

// eachVendorLib is eachVendor for tests that also talk to the stand-in's
// test hooks.
func eachVendorLib(t *testing.T, f func(t *testing.T, d *gpu.Driver, lib string)) {
	for _, v := range []gpu.Vendor{gpu.VendorNVIDIA, gpu.VendorAMD} {
		t.Run(v.String(), func(t *testing.T) {
			lib := buildStandin(t)
			f(t, openLib(t, lib, v, gpu.Options{}), lib)
		})
	}
}

// A rank that uses GPU 1 creates no context on GPU 0: not for pointer
// queries (which need some context), pinned staging memory, or PCI ids.
func TestNoContextOnOtherDevices(t *testing.T) {
	lib := buildStandin(t)
	torch := openLib(t, lib, gpu.VendorNVIDIA, gpu.Options{}) // plays the application's allocator
	const n = 4 * page
	p := allocDevice(t, torch, n, 1)
	require.Zero(t, standin.Query(t, lib, "ctx_retains", 0))

	d := openLib(t, lib, gpu.VendorNVIDIA, gpu.Options{})
	require.NoError(t, d.CheckDeviceRange(p, n, 1))
	_, err := d.PCIBusID(0)
	require.NoError(t, err)
	checkStagedSpans(t, d, 1)
	require.Zero(t, standin.Query(t, lib, "ctx_retains", 0), "no context was created on GPU 0")
}

// Only a failed driver call retires a pooled Stager: a consumer's error (a
// socket) keeps it, because freeing page-locked memory synchronizes the
// device.
func TestStagerKeptAcrossConsumerErrors(t *testing.T) {
	eachVendorLib(t, func(t *testing.T, d *gpu.Driver, lib string) {
		p := allocDevice(t, d, 1<<20, 0)
		spans := []gpu.Span{{Addr: p, Size: 1 << 20}}
		require.NoError(t, d.ReadStaged(0, spans, func([]byte) error { return nil }))
		allocs := standin.Query(t, lib, "host_allocs", 0)
		netErr := errors.New("connection reset by peer")
		for range 3 {
			require.ErrorIs(t, d.ReadStaged(0, spans, func([]byte) error { return netErr }), netErr)
			require.ErrorIs(t, d.WriteStaged(0, spans, func([]byte) error { return netErr }), netErr)
		}
		require.NoError(t, d.ReadStaged(0, spans, func([]byte) error { return nil }))
		require.Equal(t, allocs, standin.Query(t, lib, "host_allocs", 0), "no Stager was freed and made again")
	})
}

// Waits poll an event: no cuStreamSynchronize, which spins a core under
// CU_CTX_SCHED_AUTO. The stand-in's events say "not ready" once, and run
// the copies only when they are done, so a wait that returns early shows
// up as wrong bytes.
func TestWaitsPollEvents(t *testing.T) {
	eachVendorLib(t, func(t *testing.T, d *gpu.Driver, lib string) {
		checkCopies(t, d, 0, true)
		checkCopyDeviceBatch(t, d, 1)
		checkStagedSpans(t, d, 0)
		require.Zero(t, standin.Query(t, lib, "stream_syncs", 0))
		require.Positive(t, standin.Query(t, lib, "event_queries", 0))
	})
}

// A sticky error (700: illegal address) makes the GPU path fail at once
// from then on, with an error that says the context is lost.
func TestStickyErrorIsFatal(t *testing.T) {
	eachVendorLib(t, func(t *testing.T, d *gpu.Driver, lib string) {
		p, err := d.AllocDevice(page, 0) // never freed: the device is lost
		require.NoError(t, err)
		buf := make([]byte, 100)
		require.NoError(t, d.CopyToHost(buf, p, 0))
		standin.Inject(t, lib, "sticky", 700)
		err = d.CopyToHost(buf, p, 0)
		require.ErrorIs(t, err, gpu.ErrDeviceLost)
		require.ErrorContains(t, err, "illegal memory access")
		err = d.CopyFromHost(p, buf, 1)
		require.ErrorIs(t, err, gpu.ErrDeviceLost, "later calls fail too")
		require.ErrorContains(t, err, "first error")
		require.ErrorIs(t, d.CheckDeviceRange(p, page, 0), gpu.ErrDeviceLost)
		require.ErrorIs(t, d.ReadStaged(0, []gpu.Span{{Addr: p, Size: 10}}, func([]byte) error { return nil }), gpu.ErrDeviceLost)
		require.False(t, errors.Is(err, gpu.ErrNotSupported))
	})
}

// dmabufBytes reads n bytes at offset of a stand-in dma-buf, as an RDMA
// NIC registering it at that offset would see them.
func dmabufBytes(t *testing.T, lib string, fd int, offset uint64, n int) []byte {
	t.Helper()
	start := standin.Query(t, lib, "dmabuf_start", fd)
	require.GreaterOrEqual(t, start, int64(0), "the stand-in made fd %d", fd)
	buf := make([]byte, n)
	_, err := syscall.Pread(fd, buf, start+int64(offset))
	require.NoError(t, err)
	return buf
}

// The offset DmabufFD returns is where the pointer's bytes lie in the
// dma-buf: CUDA's starts at the page asked for, HIP's is the whole
// allocation (through ROCr's hsa_amd_portable_export_dmabuf, or without it
// the pointer's offset in its allocation).
func TestDmabufOffsetFindsTheBytes(t *testing.T) {
	for _, c := range []struct {
		name   string
		vendor gpu.Vendor
		args   []string
	}{
		{"nvidia", gpu.VendorNVIDIA, nil},
		{"amd", gpu.VendorAMD, nil},
		{"amd without hsa", gpu.VendorAMD, []string{"-DSTANDIN_NO_HSA"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			lib := buildStandin(t, c.args...)
			d := openLib(t, lib, c.vendor, gpu.Options{})
			const n = 4 * page
			data := randomBytes(n, 11)
			p := allocDevice(t, d, n, 1)
			require.NoError(t, d.CopyFromHost(p, data, 1))
			at := uint64(2*page + 100)
			fd, off, err := d.ExportDmabuf(p+uintptr(at), 5000, 1)
			require.NoError(t, err)
			t.Cleanup(func() { require.NoError(t, syscall.Close(fd)) })
			require.Equal(t, data[at:at+5000], dmabufBytes(t, lib, fd, off, 5000))
		})
	}
}

// NVIDIA's proprietary kernel modules report no dma-buf support: the
// export says so, as core's "not supported", so that RDMA can fall back.
func TestDmabufProprietaryDriver(t *testing.T) {
	d := openLib(t, buildStandin(t, "-DSTANDIN_PROPRIETARY"), gpu.VendorNVIDIA, gpu.Options{})
	p := allocDevice(t, d, page, 0)
	_, _, err := d.DmabufFD(p, page)
	require.ErrorIs(t, err, core.ErrNotSupported)
	require.ErrorContains(t, err, "DMA_BUF_SUPPORTED is 0")
}

// VMM memory (PyTorch's expandable_segments): a buffer spans several
// adjacent mappings, each its own range for pointer queries. Registration
// checks it mapping by mapping; legacy IPC refuses it, and says why.
func TestVMMChunks(t *testing.T) {
	const chunk = 16 * page
	lib := buildStandin(t, "-DSTANDIN_VMM_CHUNK=65536")
	for _, v := range []gpu.Vendor{gpu.VendorNVIDIA, gpu.VendorAMD} {
		t.Run(v.String(), func(t *testing.T) {
			d := openLib(t, lib, v, gpu.Options{StagingSlotSize: 3000})
			const n = 3*chunk + 500
			p := allocDevice(t, d, n, 0)
			info, err := d.PointerInfo(p + chunk + 10)
			require.NoError(t, err)
			require.True(t, info.VMM)
			require.Equal(t, p+chunk, info.AllocBase, "a range is one mapping")
			require.Equal(t, uint64(chunk), info.AllocSize)

			require.NoError(t, d.CheckDeviceRange(p+1000, n-1000, 0), "spans all mappings")
			require.ErrorContains(t, d.CheckDeviceRange(p, 4*chunk+1, 0), "extends past the end")
			legacy := allocDevice(t, d, page, 0) // right after the VMM allocation
			require.ErrorContains(t, d.CheckDeviceRange(legacy-page, 2*page, 0), "spans allocations")

			data := randomBytes(n, 13)
			require.NoError(t, d.WriteStaged(0, []gpu.Span{{Addr: p, Size: n}}, func(b []byte) error {
				copy(b, data[:len(b)])
				data = data[len(b):]
				return nil
			}))
			var got bytes.Buffer
			require.NoError(t, d.ReadStaged(0, []gpu.Span{{Addr: p, Size: n}}, func(b []byte) error {
				_, err := got.Write(b)
				return err
			}))
			require.Equal(t, randomBytes(n, 13), got.Bytes())

			_, _, err = d.IPCExport(p + chunk)
			require.ErrorIs(t, err, core.ErrNotSupported)
			require.ErrorContains(t, err, "VMM memory")
		})
	}
}
