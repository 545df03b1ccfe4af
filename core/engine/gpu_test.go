package engine_test

// GPU memory through the engine's public API, against the stand-in driver
// (internal/standin): its "device memory" is host memory underneath, so the
// tests read and write it directly to check the bytes the engines moved.
// Both engines of a test share one driver in one process; the stand-in,
// unlike CUDA and HIP, lets a process open its own IPC handles (unless built
// with -DSTANDIN_STRICT_IPC), so the same-host path runs for real.

import (
	"bytes"
	"crypto/rand"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
	"unsafe"

	"github.com/stretchr/testify/require"

	"github.com/mori-go/mori-go/core"
	"github.com/mori-go/mori-go/core/engine"
	"github.com/mori-go/mori-go/gpu"
	"github.com/mori-go/mori-go/internal/standin"
	"github.com/mori-go/mori-go/stack"
	"github.com/mori-go/mori-go/transport/ipc"
)

// standinGPU opens a fresh copy of the stand-in driver, with staging slots
// small enough that a frame spans several of them.
func standinGPU(t *testing.T, args ...string) *gpu.Driver {
	t.Helper()
	d, err := gpu.Open(gpu.Options{Library: standin.Build(t, args...), Vendor: gpu.VendorNVIDIA,
		StagingSlots: 3, StagingSlotSize: 64 << 10})
	require.NoError(t, err)
	t.Cleanup(func() { require.NoError(t, d.Close()) })
	return d
}

// gpuPair returns two engines with the driver d, on nodes nodeA and nodeB,
// registered with each other.
func gpuPair(t *testing.T, d *gpu.Driver, nodeA, nodeB string, mod func(*stack.Config)) (*engine.Engine, *engine.Engine) {
	t.Helper()
	with := func(node string) func(*stack.Config) {
		return func(c *stack.Config) {
			c.GPU = d
			c.NodeID = node
			c.HandshakeTimeout = 5 * time.Second
			if mod != nil {
				mod(c)
			}
		}
	}
	a := newEngine(t, "prefill-"+t.Name(), with(nodeA))
	b := newEngine(t, "decode-"+t.Name(), with(nodeB))
	require.NoError(t, a.RegisterRemoteEngine(b.Desc()))
	require.NoError(t, b.RegisterRemoteEngine(a.Desc()))
	return a, b
}

// allocGPU allocates device memory, freed when the test ends, and returns
// it with a view of its bytes.
func allocGPU(t *testing.T, d *gpu.Driver, n int, device int) (uintptr, []byte) {
	t.Helper()
	p, err := d.AllocDevice(uint64(n), device)
	require.NoError(t, err)
	t.Cleanup(func() { require.NoError(t, d.FreeDevice(p)) })
	return p, unsafe.Slice((*byte)(core.PointerOf(p)), n)
}

func registerGPU(t testing.TB, e *engine.Engine, p uintptr, n int, device int) core.MemoryDesc {
	t.Helper()
	d, err := e.RegisterMemory(p, uint64(n), device, core.LocationGPU)
	require.NoError(t, err)
	require.Equal(t, core.LocationGPU, d.Location)
	return d
}

func wait(t *testing.T, st []*core.Status) {
	t.Helper()
	for _, s := range st {
		require.Equal(t, core.StatusSuccess, s.Wait(10*time.Second), s.Message())
	}
}

// sameRanges checks that the bytes of ranges are equal in local and remote.
func sameRanges(t *testing.T, local, remote []byte, ranges []core.Range) {
	t.Helper()
	for i, r := range ranges {
		require.True(t, bytes.Equal(local[r.LocalOffset:r.LocalOffset+r.Size], remote[r.RemoteOffset:r.RemoteOffset+r.Size]), "range %d differs", i)
	}
}

// gpuRanges are mixed: tiny, page-sized, one across several staging slots
// and frames, unaligned, at the end.
func gpuRanges(n uint64) []core.Range {
	return []core.Range{
		{LocalOffset: 0, RemoteOffset: 100, Size: 1},
		{LocalOffset: 4096, RemoteOffset: 8192, Size: 4096},
		{LocalOffset: 64<<10 + 3, RemoteOffset: 1 << 20, Size: 1<<20 + 77},
		{LocalOffset: n - 1000, RemoteOffset: n - 1000, Size: 1000},
	}
}

func cloneRanges(rs []core.Range) []core.Range { return append([]core.Range(nil), rs...) }

func TestGPUOverTCP(t *testing.T) {
	d := standinGPU(t)
	// One stream, so that host and GPU frames share batches.
	a, b := gpuPair(t, d, "node-a", "node-b", func(c *stack.Config) {
		c.TCP.Streams = 1
		c.TCP.ChunkSize = 256 << 10
	})
	const n = 2<<20 + 4096
	srcP, src := allocGPU(t, d, n, 0)
	dstP, dst := allocGPU(t, d, n, 1)
	rand.Read(src)
	sd, dd := registerGPU(t, a, srcP, n, 0), registerGPU(t, b, dstP, n, 1)
	require.NotNil(t, dd.Blob(core.BackendXGMI), "GPU memory is exported for the same-host path")
	hsrc, hdst := alloc(t, n), alloc(t, n)
	rand.Read(hsrc.Bytes())
	hsd, hdd := register(t, a, hsrc), register(t, b, hdst)

	ranges := gpuRanges(n)
	uid := a.AllocateTransferUID()
	wait(t, a.Submit(core.OpWrite, []engine.Request{
		{Local: sd, Remote: dd, Ranges: cloneRanges(ranges), UID: uid},
		{Local: hsd, Remote: hdd, Ranges: cloneRanges(ranges), UID: uid + 100},
	}))
	sameRanges(t, src, dst, ranges)
	sameRanges(t, hsrc.Bytes(), hdst.Bytes(), ranges)
	in, ok := b.PopInboundTransferStatus(a.Key(), uid)
	require.True(t, ok, "the TCP path records an inbound status")
	require.Equal(t, core.StatusSuccess, in.Code)
	require.Zero(t, ipcStats(a).Transfers, "engines on different nodes do not take the same-host path")

	// Read back into fresh GPU memory.
	backP, back := allocGPU(t, d, n, 0)
	bd := registerGPU(t, a, backP, n, 0)
	wait(t, a.Submit(core.OpRead, []engine.Request{{Local: bd, Remote: dd, Ranges: cloneRanges(ranges), UID: a.AllocateTransferUID()}}))
	sameRanges(t, back, dst, ranges)
	sameRanges(t, back, src, []core.Range{{LocalOffset: 64<<10 + 3, RemoteOffset: 64<<10 + 3, Size: 1<<20 + 77}})

	// GPU to host memory and host to GPU memory, both directions.
	clear(hdst.Bytes())
	wait(t, a.Submit(core.OpWrite, []engine.Request{{Local: sd, Remote: hdd, Ranges: cloneRanges(ranges), UID: a.AllocateTransferUID()}}))
	sameRanges(t, src, hdst.Bytes(), ranges)
	clear(dst)
	wait(t, a.Submit(core.OpWrite, []engine.Request{{Local: hsd, Remote: dd, Ranges: cloneRanges(ranges), UID: a.AllocateTransferUID()}}))
	sameRanges(t, hsrc.Bytes(), dst, ranges)
	clear(back)
	wait(t, a.Submit(core.OpRead, []engine.Request{{Local: bd, Remote: hdd, Ranges: cloneRanges(ranges), UID: a.AllocateTransferUID()}}))
	sameRanges(t, back, hdst.Bytes(), ranges)
	require.Zero(t, a.InFlight())
}

// TestGPUOverTCPManyStreams moves many GPU transfers at once over several
// streams, each a gather list of scattered pages.
func TestGPUOverTCPManyStreams(t *testing.T) {
	d := standinGPU(t)
	a, b := gpuPair(t, d, "node-a", "node-b", nil)
	const pages, page = 512, 4096
	srcP, src := allocGPU(t, d, pages*page, 0)
	dstP, dst := allocGPU(t, d, 2*pages*page, 0)
	rand.Read(src)
	sd, dd := registerGPU(t, a, srcP, pages*page, 0), registerGPU(t, b, dstP, 2*pages*page, 0)
	var reqs []engine.Request
	for k := range 8 { // 8 transfers of 64 scattered pages each
		var rs []core.Range
		for i := k * 64; i < (k+1)*64; i++ {
			rs = append(rs, core.Range{LocalOffset: uint64(i * page), RemoteOffset: uint64(2 * i * page), Size: page})
		}
		reqs = append(reqs, engine.Request{Local: sd, Remote: dd, Ranges: rs, UID: uint64(k + 1)})
	}
	wait(t, a.Submit(core.OpWrite, reqs))
	for i := range pages {
		require.Equal(t, src[i*page:(i+1)*page], dst[2*i*page:(2*i+1)*page], "page %d", i)
	}
}

func TestGPUSameHostIPC(t *testing.T) {
	d := standinGPU(t)
	a, b := gpuPair(t, d, "node", "node", nil)
	require.NotNil(t, a.IPC())
	const n = 2<<20 + 4096
	srcP, src := allocGPU(t, d, n, 0)
	rand.Read(src)
	sd := registerGPU(t, a, srcP, n, 0)
	// Two registrations inside one allocation of the target: one handle,
	// one mapping, two offsets.
	baseP, base := allocGPU(t, d, 2*n, 1)
	dd1 := registerGPU(t, b, baseP, n, 1)
	dd2 := registerGPU(t, b, baseP+n, n, 1)

	ranges := gpuRanges(n)
	uid := a.AllocateTransferUID()
	wait(t, a.Submit(core.OpWrite, []engine.Request{{Local: sd, Remote: dd1, Ranges: cloneRanges(ranges), UID: uid}}))
	sameRanges(t, src, base[:n], ranges)
	st := ipcStats(a)
	require.Equal(t, uint64(1), st.Transfers, "the same-host path moved the transfer")
	require.Equal(t, 1, st.Mappings)
	_, ok := b.PopInboundTransferStatus(a.Key(), uid)
	require.False(t, ok, "the same-host path records no inbound status on the target (as MORI's XGMI path)")

	wait(t, a.Submit(core.OpWrite, []engine.Request{{Local: sd, Remote: dd2, Ranges: cloneRanges(ranges), UID: a.AllocateTransferUID()}}))
	sameRanges(t, src, base[n:], ranges)
	st = ipcStats(a)
	require.Equal(t, uint64(2), st.Transfers)
	require.Equal(t, 1, st.Mappings, "memories in one allocation share its mapping (it can be opened only once)")

	// Read back.
	backP, back := allocGPU(t, d, n, 0)
	bd := registerGPU(t, a, backP, n, 0)
	wait(t, a.Submit(core.OpRead, []engine.Request{{Local: bd, Remote: dd2, Ranges: cloneRanges(ranges), UID: a.AllocateTransferUID()}}))
	sameRanges(t, back, base[n:], ranges)

	// Deregistering a target memory closes its importers' mappings before
	// it returns; new transfers to it fail.
	require.NoError(t, b.DeregisterMemory(dd1))
	require.Equal(t, 1, ipcStats(a).Mappings, "dd2 still holds the mapping")
	s := a.Submit(core.OpWrite, []engine.Request{{Local: sd, Remote: dd1, Ranges: []core.Range{{Size: 16}}, UID: a.AllocateTransferUID()}})
	require.True(t, s[0].Wait(5*time.Second).Failed())
	require.Contains(t, s[0].Message(), fmt.Sprintf("memory %d is not registered", dd1.ID))
	require.NoError(t, b.DeregisterMemory(dd2))
	require.Zero(t, ipcStats(a).Mappings, "the last memory of the allocation is gone: unmapped")

	// Deregistering the remote engine closes its mappings too.
	dd3 := registerGPU(t, b, baseP, 2*n, 1)
	wait(t, a.Submit(core.OpWrite, []engine.Request{{Local: sd, Remote: dd3, Ranges: []core.Range{{RemoteOffset: n, Size: n}}, UID: a.AllocateTransferUID()}}))
	require.Equal(t, src, base[n:])
	require.Equal(t, 1, ipcStats(a).Mappings)
	require.NoError(t, a.DeregisterRemoteEngine(b.Desc()))
	require.Zero(t, ipcStats(a).Mappings)
	require.Zero(t, a.InFlight())
}

// TestGPUSameHostDescriptorChecked: the exporter refuses to be opened
// through a descriptor that is not its registration (here one claiming
// more bytes), so the importer never copies outside the registered memory.
func TestGPUSameHostDescriptorChecked(t *testing.T) {
	d := standinGPU(t)
	a, b := gpuPair(t, d, "node", "node", nil)
	const n = 64 << 10
	srcP, _ := allocGPU(t, d, 2*n, 0)
	dstP, dst := allocGPU(t, d, 2*n, 1)
	sd := registerGPU(t, a, srcP, 2*n, 0)
	dd := registerGPU(t, b, dstP, n, 1)
	forged := dd
	forged.Size = 2 * n
	st := a.Submit(core.OpWrite, []engine.Request{{Local: sd, Remote: forged, Ranges: []core.Range{{RemoteOffset: n, Size: n}}, UID: 1}})
	require.True(t, st[0].Wait(5*time.Second).Failed())
	require.Contains(t, st[0].Message(), "is not this engine's registration")
	require.Equal(t, make([]byte, 2*n), dst, "nothing was written")
	require.Zero(t, ipcStats(a).Mappings)
}

// TestGPUSameHostFallsBackToTCP: a driver that refuses the handle (CUDA and
// HIP refuse handles exported by the same process) sends the transfers to
// the data backend, once decided per remote memory.
func TestGPUSameHostFallsBackToTCP(t *testing.T) {
	d := standinGPU(t, "-DSTANDIN_STRICT_IPC")
	logs := &syncBuffer{}
	a, b := gpuPair(t, d, "node", "node", func(c *stack.Config) {
		if strings.HasPrefix(c.Key, "prefill") {
			c.Logger = slog.New(slog.NewTextHandler(logs, nil))
		}
	})
	const n = 2<<20 + 4096
	srcP, src := allocGPU(t, d, n, 0)
	dstP, dst := allocGPU(t, d, n, 1)
	rand.Read(src)
	sd, dd := registerGPU(t, a, srcP, n, 0), registerGPU(t, b, dstP, n, 1)
	ranges := gpuRanges(n)
	for range 3 {
		uid := a.AllocateTransferUID()
		wait(t, a.Submit(core.OpWrite, []engine.Request{{Local: sd, Remote: dd, Ranges: cloneRanges(ranges), UID: uid}}))
		sameRanges(t, src, dst, ranges)
		_, ok := b.PopInboundTransferStatus(a.Key(), uid)
		require.True(t, ok, "went over TCP")
	}
	st := ipcStats(a)
	require.Zero(t, st.Transfers)
	require.Equal(t, uint64(3), st.Fallbacks)
	require.Equal(t, 1, strings.Count(logs.String(), "same-host GPU path unavailable"), "decided and logged once: %s", logs)
}

func TestGPUDisableIPC(t *testing.T) {
	d := standinGPU(t)
	a, b := gpuPair(t, d, "node", "node", func(c *stack.Config) { c.DisableIPC = true })
	require.Nil(t, a.IPC())
	const n = 64 << 10
	srcP, src := allocGPU(t, d, n, 0)
	dstP, dst := allocGPU(t, d, n, 1)
	rand.Read(src)
	sd, dd := registerGPU(t, a, srcP, n, 0), registerGPU(t, b, dstP, n, 1)
	require.Nil(t, dd.Blob(core.BackendXGMI))
	wait(t, a.Submit(core.OpWrite, []engine.Request{{Local: sd, Remote: dd, Ranges: []core.Range{{Size: n}}, UID: 1}}))
	require.Equal(t, src, dst)
}

func TestGPURegisterMemoryErrors(t *testing.T) {
	d := standinGPU(t)
	e := newEngine(t, "gpu-reg", func(c *stack.Config) { c.GPU = d })
	p, _ := allocGPU(t, d, 4096, 0)
	q1, _ := allocGPU(t, d, 4096, 1)
	q2, _ := allocGPU(t, d, 4096, 1)
	require.Equal(t, q1+4096, q2, "the stand-in places consecutive allocations side by side")
	host := alloc(t, 4096)
	cases := []struct {
		name   string
		ptr    uintptr
		size   uint64
		device int
		msg    string
	}{
		{"wrong device", p, 4096, 1, "belongs to device 0"},
		{"no such device", p, 4096, 7, "no such device (2 devices)"},
		{"host pointer", host.Addr(), 4096, 0, "pointer is host memory"},
		{"spans allocations", q1 + 2048, 4096, 1, "spans allocations"},
		{"past the end", p, 8192, 0, "past the end of allocation"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := e.RegisterMemory(c.ptr, c.size, c.device, core.LocationGPU)
			require.ErrorContains(t, err, c.msg)
			require.ErrorContains(t, err, fmt.Sprintf("register memory %#x len %d on GPU %d", c.ptr, c.size, c.device))
			require.Equal(t, core.ErrGPUOp, core.CodeOf(err))
		})
	}
	require.Zero(t, e.Registry().Len(), "nothing was registered")
	registerGPU(t, e, p, 4096, 0)
}

func TestGPURegisterWithoutDriver(t *testing.T) {
	logs := &syncBuffer{}
	e := newEngine(t, "no-gpu", func(c *stack.Config) { c.Logger = slog.New(slog.NewTextHandler(logs, nil)) })
	require.Nil(t, e.IPC())
	for range 3 {
		m := alloc(t, 4096)
		d := registerGPU(t, e, m.Addr(), 4096, 0)
		require.Nil(t, d.Blob(core.BackendXGMI))
	}
	require.Equal(t, 1, strings.Count(logs.String(), "GPU registrations are treated as host memory"), "logged once: %s", logs)
}

// Without a driver, memory registered as GPU memory is accepted only where
// it is host memory of this process: a device address (here an
// inaccessible reservation, as CUDA makes for device memory, or nothing at
// all) would crash the process when the CPU reads it.
func TestGPURegisterWithoutDriverRefusesNonHostMemory(t *testing.T) {
	e := newEngine(t, "no-gpu-refuses", nil)
	reserved, err := syscall.Mmap(-1, 0, 2*4096, syscall.PROT_NONE, syscall.MAP_PRIVATE|syscall.MAP_ANON)
	require.NoError(t, err)
	t.Cleanup(func() { require.NoError(t, syscall.Munmap(reserved)) })
	m := alloc(t, 4096)
	cases := []struct {
		name string
		ptr  uintptr
		size uint64
		msg  string
	}{
		{"device-like reservation", uintptr(unsafe.Pointer(&reserved[0])), 4096, "is mapped ---p, not readable and writable"},
		{"unmapped address", 0x1000, 4096, "0x1000 is not mapped in this process"},
		{"host memory and beyond", m.Addr(), 1 << 40, "host range"},
	}
	for _, c := range cases {
		_, err := e.RegisterMemory(c.ptr, c.size, 0, core.LocationGPU)
		require.ErrorContains(t, err, c.msg, c.name)
		require.ErrorContains(t, err, "no GPU driver is loaded in this process", c.name)
		require.Equal(t, core.ErrGPUOp, core.CodeOf(err), c.name)
	}
	require.Zero(t, e.Registry().Len(), "nothing was registered")
	registerGPU(t, e, m.Addr(), 4096, 0)
}

// syncBuffer is a bytes.Buffer safe for the engine's concurrent logging.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// TestGPUSameHostSharedMapping: two engines of one process import the same
// remote allocation. A handle can be mapped only once per process, so they
// share the mapping; it goes away with the last user.
func TestGPUSameHostSharedMapping(t *testing.T) {
	d := standinGPU(t)
	a, b := gpuPair(t, d, "node", "node", nil)
	c := newEngine(t, "third-"+t.Name(), func(cfg *stack.Config) { cfg.GPU = d; cfg.NodeID = "node" })
	require.NoError(t, c.RegisterRemoteEngine(b.Desc()))
	const n = 64 << 10
	srcP, src := allocGPU(t, d, 2*n, 0)
	dstP, dst := allocGPU(t, d, 2*n, 1)
	rand.Read(src)
	dd := registerGPU(t, b, dstP, 2*n, 1)
	var sds []core.MemoryDesc
	for i, e := range []*engine.Engine{a, c} {
		sd := registerGPU(t, e, srcP+uintptr(i*n), n, 0)
		sds = append(sds, sd)
		wait(t, e.Submit(core.OpWrite, []engine.Request{{Local: sd, Remote: dd, Ranges: []core.Range{{RemoteOffset: uint64(i * n), Size: n}}, UID: 1}}))
		st := ipcStats(e)
		require.Equal(t, uint64(1), st.Transfers, "engine %d", i)
		require.Zero(t, st.Fallbacks, "engine %d", i)
		require.Equal(t, 1, st.Mappings, "engine %d", i)
	}
	require.Equal(t, src, dst)
	require.NoError(t, a.DeregisterRemoteEngine(b.Desc()))
	require.Zero(t, ipcStats(a).Mappings)
	clear(dst)
	wait(t, c.Submit(core.OpWrite, []engine.Request{{Local: sds[1], Remote: dd, Ranges: []core.Range{{Size: n}}, UID: 2}}))
	require.Equal(t, src[n:], dst[:n], "c still reaches the memory through the shared mapping")
	require.Equal(t, uint64(2), ipcStats(c).Transfers)
}

// TestGPUSameHostDeregisterInFlight: once the target's DeregisterMemory
// returns, no copy of the same-host path lands in the memory any more.
func TestGPUSameHostDeregisterInFlight(t *testing.T) {
	d := standinGPU(t)
	a, b := gpuPair(t, d, "node", "node", nil)
	const n = 8 << 20
	srcP, _ := allocGPU(t, d, n, 0)
	dstP, dst := allocGPU(t, d, n, 1)
	sd, dd := registerGPU(t, a, srcP, n, 0), registerGPU(t, b, dstP, n, 1)
	wait(t, a.Submit(core.OpWrite, []engine.Request{{Local: sd, Remote: dd, Ranges: []core.Range{{Size: 16}}, UID: 1000}}))
	var sts []*core.Status
	for i := range 16 {
		sts = append(sts, a.Submit(core.OpWrite, []engine.Request{{Local: sd, Remote: dd, Ranges: []core.Range{{Size: n}}, UID: uint64(i + 1)}})...)
	}
	require.NoError(t, b.DeregisterMemory(dd))
	for i := range dst {
		dst[i] = 0xAB
	}
	for _, st := range sts {
		c := st.Wait(10 * time.Second)
		require.True(t, c.Terminal())
		if c.Failed() {
			require.Contains(t, st.Message(), "memory")
		}
	}
	for i, v := range dst {
		if v != 0xAB {
			t.Fatalf("byte %d written after deregistration", i)
		}
	}
	require.Zero(t, ipcStats(a).Mappings)
}

// ipcStats returns the counters of e's same-host path.
func ipcStats(e *engine.Engine) ipc.Stats { return e.IPC().(*ipc.Backend).Stats() }
