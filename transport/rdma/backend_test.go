package rdma_test

import (
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"
	"unsafe"

	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"

	"github.com/mori-go/mori-go/core"
	"github.com/mori-go/mori-go/core/engine"
	"github.com/mori-go/mori-go/stack"
	"github.com/mori-go/mori-go/transport/rdma"
	"github.com/mori-go/mori-go/verbs"
	"github.com/mori-go/mori-go/verbs/sim"
)

func TestSimWriteAndReadMoveBytesIntact(t *testing.T) {
	for _, mode := range []int{0, 1} {
		t.Run([]string{"polling", "event"}[mode], func(t *testing.T) {
			o := engineOpts{cfg: defaultRDMA()}
			o.cfg.PollCQMode = mode
			p := newSimPair(t, o)
			const n = 8 << 20
			src, dst := alloc(t, n), alloc(t, n)
			fill(src.Bytes(), 3)
			sd, dd := register(t, p.a, src), register(t, p.b, dst)
			ranges := []core.Range{
				{LocalOffset: 0, RemoteOffset: 100, Size: 1},
				{LocalOffset: 4096, RemoteOffset: 8192, Size: 4096},
				{LocalOffset: 1 << 20, RemoteOffset: 2 << 20, Size: 3<<20 + 7},
				{LocalOffset: 7 << 20, RemoteOffset: 7 << 20, Size: 1000},
			}
			uid := p.a.AllocateTransferUID()
			st := write(t, p.a, uid, sd, dd, ranges...)
			require.Equal(t, core.StatusSuccess, st.Wait(10*time.Second), st.Message())
			for _, r := range ranges {
				require.Equal(t, src.Bytes()[r.LocalOffset:r.LocalOffset+r.Size], dst.Bytes()[r.RemoteOffset:r.RemoteOffset+r.Size])
			}
			in := inbound(t, p.b, p.a.Key(), uid)
			require.Equal(t, core.StatusSuccess, in.Code, in.Message)

			back := alloc(t, n)
			bd := register(t, p.a, back)
			uid = p.a.AllocateTransferUID()
			st = read(t, p.a, uid, bd, dd, ranges...)
			require.Equal(t, core.StatusSuccess, st.Wait(10*time.Second), st.Message())
			for _, r := range ranges {
				require.Equal(t, src.Bytes()[r.LocalOffset:r.LocalOffset+r.Size], back.Bytes()[r.LocalOffset:r.LocalOffset+r.Size])
			}
			in = inbound(t, p.b, p.a.Key(), uid)
			require.Equal(t, core.StatusSuccess, in.Code, in.Message)
			require.Zero(t, p.a.InFlight())
		})
	}
}

func TestSimManySmallRangesQueueBehindASmallSendQueue(t *testing.T) {
	o := engineOpts{cfg: defaultRDMA()}
	o.opts.SendQueueDepth = 16 // far fewer slots than work requests
	p := newSimPair(t, o)
	const pages, page = 5000, 512
	src, dst := alloc(t, pages*page), alloc(t, 2*pages*page)
	fill(src.Bytes(), 9)
	sd, dd := register(t, p.a, src), register(t, p.b, dst)
	ranges := make([]core.Range, pages)
	for i := range ranges {
		ranges[i] = core.Range{LocalOffset: uint64(i * page), RemoteOffset: uint64(2 * i * page), Size: page}
	}
	var sts []*core.Status
	for i := 0; i < 4; i++ {
		sts = append(sts, write(t, p.a, uint64(100+i), sd, dd, ranges...))
	}
	require.Equal(t, core.StatusSuccess, core.WaitAll(sts, 20*time.Second))
	for i := 0; i < pages; i++ {
		require.Equal(t, src.Bytes()[i*page:(i+1)*page], dst.Bytes()[2*i*page:(2*i+1)*page], "page %d", i)
	}
	for i := 0; i < 4; i++ {
		require.Equal(t, core.StatusSuccess, inbound(t, p.b, p.a.Key(), uint64(100+i)).Code)
	}
}

func TestSimSubmitDoesNotWaitForTheSendQueue(t *testing.T) {
	o := engineOpts{cfg: defaultRDMA()}
	o.cfg.QPPerTransfer = 1
	o.opts.SendQueueDepth = 2
	p := newSimPair(t, o)
	src, dst := alloc(t, 1<<20), alloc(t, 1<<20)
	sd, dd := register(t, p.a, src), register(t, p.b, dst)
	ranges := make([]core.Range, 64)
	for i := range ranges {
		ranges[i] = core.Range{LocalOffset: uint64(i * 2 * 4096), RemoteOffset: uint64(i * 2 * 4096), Size: 4096}
	}
	// No work request finishes while the test runs: Submit returning at
	// all, with 64 work requests for 2 slots, shows the rest waits in the
	// Go queue, not in Submit.
	p.fab.SetLatency(time.Hour)
	st := write(t, p.a, 1, sd, dd, ranges...)
	require.Equal(t, core.StatusInProgress, st.Code())
	// And it ends when its QPs go.
	require.NoError(t, p.a.DeregisterRemoteEngine(p.b.Desc()))
	require.Equal(t, core.ErrConnection, st.Wait(20*time.Second), st.Message())
}

func TestSimMemoryRegisteredBeforeTheBackendIsResolvedByQuery(t *testing.T) {
	fab := newFabric()
	ha, hb := fab.AddHost("a", nic0), fab.AddHost("b", nic0)
	// The target registers its memory before creating its backend: the
	// descriptor it hands out carries no RDMA key.
	b := newBareEngine(t, "decode", hb)
	dst := alloc(t, 1<<16)
	dd, err := b.RegisterMemory(dst.Addr(), 1<<16, -1, core.LocationCPU)
	require.NoError(t, err)
	require.Nil(t, dd.Blob(core.BackendRDMA))
	createRDMA(t, b, defaultRDMA())
	a := newSimEngine(t, "prefill", ha, engineOpts{cfg: defaultRDMA()})
	require.NoError(t, a.RegisterRemoteEngine(b.Desc()))
	require.NoError(t, b.RegisterRemoteEngine(a.Desc()))
	src := alloc(t, 1<<16)
	fill(src.Bytes(), 1)
	sd := register(t, a, src)
	for uid := uint64(1); uid <= 2; uid++ { // the second one uses the cached key
		st := write(t, a, uid, sd, dd, core.Range{Size: 1 << 16})
		require.Equal(t, core.StatusSuccess, st.Wait(10*time.Second), st.Message())
	}
	require.Equal(t, src.Bytes(), dst.Bytes())

	// A descriptor of memory the target does not have fails clearly.
	bogus := dd
	bogus.ID = 777
	st := write(t, a, 3, sd, bogus, core.Range{Size: 16})
	require.Equal(t, core.ErrRemote, st.Wait(10*time.Second))
	require.Contains(t, st.Message(), "memory 777 is not registered")
}

func TestSimTwoNICsCarryOneTransfer(t *testing.T) {
	o := engineOpts{cfg: defaultRDMA()}
	o.cfg.Devices = "mlx5_0,mlx5_1"
	p := newSimPair(t, o, sim.NIC{Name: "mlx5_0"}, sim.NIC{Name: "mlx5_1"})
	require.Len(t, p.a.DataBackend().(*rdma.Backend).NICs(), 2)
	const n = 8 << 20
	src, dst := alloc(t, n), alloc(t, n)
	fill(src.Bytes(), 11)
	sd, dd := register(t, p.a, src), register(t, p.b, dst)
	// 8 MiB in 1 MiB work requests over 4 QPs, two on each NIC.
	st := write(t, p.a, 1, sd, dd, core.Range{Size: n})
	require.Equal(t, core.StatusSuccess, st.Wait(10*time.Second), st.Message())
	require.Equal(t, src.Bytes(), dst.Bytes())
	require.Equal(t, core.StatusSuccess, inbound(t, p.b, p.a.Key(), 1).Code)
}

func TestSimInfiniBandRoutesByLID(t *testing.T) {
	p := newSimPair(t, engineOpts{}, sim.NIC{Name: "mlx5_0", Link: verbs.LinkInfiniBand})
	nics := p.a.DataBackend().(*rdma.Backend).NICs()
	require.Equal(t, verbs.LinkInfiniBand, nics[0].Link)
	require.NotZero(t, nics[0].LID)
	src, dst := alloc(t, 1<<16), alloc(t, 1<<16)
	fill(src.Bytes(), 2)
	st := write(t, p.a, 1, register(t, p.a, src), register(t, p.b, dst), core.Range{Size: 1 << 16})
	require.Equal(t, core.StatusSuccess, st.Wait(10*time.Second), st.Message())
	require.Equal(t, src.Bytes(), dst.Bytes())
}

func TestSimPeerWithoutRDMAIsRefusedClearly(t *testing.T) {
	fab := newFabric()
	a := newSimEngine(t, "rdma-engine", fab.AddHost("a", nic0), engineOpts{cfg: defaultRDMA()})
	b, err := stack.New(stack.Config{Config: engine.Config{Key: "tcp-engine", Logger: testLogger()}, NoRDMA: true})
	require.NoError(t, err)
	defer b.Close()
	_, err = b.CreateBackend(core.BackendTCP, nil)
	require.NoError(t, err)
	err = a.RegisterRemoteEngine(b.Desc())
	require.ErrorContains(t, err, `engine "tcp-engine" publishes no RDMA backend`)
}

func TestSimWithoutNotificationTheTargetKnowsNothing(t *testing.T) {
	o := engineOpts{cfg: defaultRDMA()}
	o.cfg.EnableNotification = false
	p := newSimPair(t, o)
	src, dst := alloc(t, 1<<16), alloc(t, 1<<16)
	st := write(t, p.a, 1, register(t, p.a, src), register(t, p.b, dst), core.Range{Size: 4096})
	require.Equal(t, core.StatusSuccess, st.Wait(10*time.Second), st.Message())
	_, ok := p.b.PopInboundTransferStatus(p.a.Key(), 1)
	require.False(t, ok)
}

func TestSimManyConcurrentTransfers(t *testing.T) {
	o := engineOpts{cfg: defaultRDMA()}
	o.opts.SendQueueDepth = 32
	p := newSimPair(t, o)
	const slot, count = 16 << 10, 128
	src, dst := alloc(t, slot*count), alloc(t, slot*count)
	fill(src.Bytes(), 77)
	sd, dd := register(t, p.a, src), register(t, p.b, dst)
	var wg sync.WaitGroup
	sts := make([]*core.Status, count)
	for i := 0; i < count; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			off := uint64(i * slot)
			// Two halves, written in reverse order, so that ranges do not
			// coalesce.
			sts[i] = write(t, p.a, uint64(1000+i), sd, dd,
				core.Range{LocalOffset: off + slot/2, RemoteOffset: off + slot/2, Size: slot / 2},
				core.Range{LocalOffset: off, RemoteOffset: off, Size: slot / 2})
		}()
	}
	wg.Wait()
	require.Equal(t, core.StatusSuccess, core.WaitAll(sts, 20*time.Second))
	require.Equal(t, src.Bytes(), dst.Bytes())
	for i := 0; i < count; i++ {
		require.Equal(t, core.StatusSuccess, inbound(t, p.b, p.a.Key(), uint64(1000+i)).Code)
	}
}

// fakeGPU stands in for a GPU driver whose memory is a memfd: it exports
// dma-bufs (a dup of the memfd) so that the backend registers with
// ibv_reg_dmabuf_mr, which the simulator serves by mapping the fd. The
// RDMA backend uses only the checks and the export; the embedded interface
// stands for the rest of the driver (calling it would panic).
type fakeGPU struct {
	core.GPU
	fd      int
	mem     []byte
	exports atomic.Int32
	// noDmabuf: the driver exports no dma-buf (the proprietary NVIDIA
	// modules, ROCm before 6.x).
	noDmabuf bool
}

func newFakeGPU(t *testing.T, size int) *fakeGPU {
	fd, err := unix.MemfdCreate("fake-gpu", 0)
	require.NoError(t, err)
	require.NoError(t, unix.Ftruncate(fd, int64(size)))
	mem, err := unix.Mmap(fd, 0, size, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
	require.NoError(t, err)
	t.Cleanup(func() {
		unix.Munmap(mem)
		unix.Close(fd)
	})
	return &fakeGPU{fd: fd, mem: mem}
}

func (g *fakeGPU) base() uintptr { return uintptr(unsafe.Pointer(&g.mem[0])) }

func (g *fakeGPU) CheckDeviceRange(ptr uintptr, size uint64, device int) error {
	if ptr < g.base() || uint64(ptr-g.base())+size > uint64(len(g.mem)) {
		return fmt.Errorf("%#x+%d is not GPU memory", ptr, size)
	}
	return nil
}

func (g *fakeGPU) CopyToHost(dst []byte, src uintptr, device int) error {
	copy(dst, g.mem[src-g.base():])
	return nil
}

func (g *fakeGPU) CopyFromHost(dst uintptr, src []byte, device int) error {
	copy(g.mem[dst-g.base():], src)
	return nil
}

func (g *fakeGPU) ExportDmabuf(addr uintptr, size uint64, device int) (int, uint64, error) {
	if err := g.CheckDeviceRange(addr, size, device); err != nil {
		return -1, 0, err
	}
	if g.noDmabuf {
		return -1, 0, errors.New("CUDA_ERROR_NOT_SUPPORTED: dma-buf is not supported by this driver")
	}
	fd, err := unix.Dup(g.fd)
	if err != nil {
		return -1, 0, err
	}
	g.exports.Add(1)
	return fd, uint64(addr - g.base()), nil
}

// Without a peer-memory module, GPU memory is registered as the dma-buf
// that the GPU driver exports.
func TestSimGPUMemoryIsRegisteredByDmabuf(t *testing.T) {
	fab := newFabric()
	gpu := newFakeGPU(t, 1<<20)
	fab.AddDeviceMemory(gpu.base(), uint64(len(gpu.mem)))
	a := newSimEngine(t, "prefill", fab.AddHost("a", nic0), engineOpts{cfg: defaultRDMA()})
	b := newSimEngine(t, "decode", fab.AddHost("b", nic0), engineOpts{cfg: defaultRDMA(), gpu: gpu})
	require.NoError(t, a.RegisterRemoteEngine(b.Desc()))
	require.NoError(t, b.RegisterRemoteEngine(a.Desc()))
	// A sub-allocation at a page offset inside the GPU allocation.
	const off, n = 64 << 10, 256 << 10
	dd, err := b.RegisterMemory(gpu.base()+off, n, 0, core.LocationGPU)
	require.NoError(t, err)
	require.Equal(t, int32(1), gpu.exports.Load())
	src := alloc(t, n)
	fill(src.Bytes(), 21)
	sd := register(t, a, src)
	st := write(t, a, 1, sd, dd, core.Range{Size: n})
	require.Equal(t, core.StatusSuccess, st.Wait(10*time.Second), st.Message())
	require.Equal(t, src.Bytes(), gpu.mem[off:off+n])

	back := alloc(t, n)
	bd := register(t, a, back)
	st = read(t, a, 2, bd, dd, core.Range{Size: n})
	require.Equal(t, core.StatusSuccess, st.Wait(10*time.Second), st.Message())
	require.Equal(t, src.Bytes(), back.Bytes())
}
