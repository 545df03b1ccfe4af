package rdma_test

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/mori-go/mori-go/core"
	"github.com/mori-go/mori-go/verbs/sim"
)

// gpuTarget starts two engines on a fabric with cfg, the target holding
// fake GPU memory (marked as device memory in the simulator), and tries to
// register 256 KiB of it.
func gpuTarget(t *testing.T, cfg sim.Config, gpu *fakeGPU) (*simPair, core.MemoryDesc, error) {
	t.Helper()
	p := &simPair{fab: sim.NewFabric(cfg)}
	p.fab.AddDeviceMemory(gpu.base(), uint64(len(gpu.mem)))
	p.ha, p.hb = p.fab.AddHost("a", nic0), p.fab.AddHost("b", nic0)
	p.a = newSimEngine(t, "prefill", p.ha, engineOpts{cfg: defaultRDMA()})
	p.b = newSimEngine(t, "decode", p.hb, engineOpts{cfg: defaultRDMA(), gpu: gpu})
	require.NoError(t, p.a.RegisterRemoteEngine(p.b.Desc()))
	require.NoError(t, p.b.RegisterRemoteEngine(p.a.Desc()))
	dd, err := p.b.RegisterMemory(gpu.base()+64<<10, 256<<10, 0, core.LocationGPU)
	return p, dd, err
}

func writeLands(t *testing.T, p *simPair, gpu *fakeGPU, dd core.MemoryDesc) {
	t.Helper()
	src := alloc(t, 256<<10)
	fill(src.Bytes(), 9)
	st := write(t, p.a, 1, register(t, p.a, src), dd, core.Range{Size: 256 << 10})
	require.Equal(t, core.StatusSuccess, st.Wait(10*time.Second), st.Message())
	require.Equal(t, src.Bytes(), gpu.mem[64<<10:320<<10])
}

// With a peer-memory module GPU memory registers by address, as MORI-IO
// does; no dma-buf is exported.
func TestSimGPUMemoryRegistersByAddressWithPeerMemory(t *testing.T) {
	gpu := newFakeGPU(t, 1<<20)
	p, dd, err := gpuTarget(t, sim.Config{PeerMemory: true}, gpu)
	require.NoError(t, err)
	require.Zero(t, gpu.exports.Load(), "dma-buf exported although ibv_reg_mr works")
	writeLands(t, p, gpu, dd)
}

// The proprietary NVIDIA modules export no dma-buf; with nvidia-peermem
// registration still works.
func TestSimGPUMemoryWithoutDmabufRegistersThroughPeerMemory(t *testing.T) {
	gpu := newFakeGPU(t, 1<<20)
	gpu.noDmabuf = true
	p, dd, err := gpuTarget(t, sim.Config{PeerMemory: true}, gpu)
	require.NoError(t, err)
	writeLands(t, p, gpu, dd)
}

// Neither path: the error names both causes.
func TestSimGPUMemoryWithoutPeerMemoryOrDmabufFailsClearly(t *testing.T) {
	gpu := newFakeGPU(t, 1<<20)
	gpu.noDmabuf = true
	_, _, err := gpuTarget(t, sim.Config{}, gpu)
	require.Error(t, err)
	require.Equal(t, core.ErrRDMAOp, core.CodeOf(err))
	require.ErrorContains(t, err, "ibv_reg_mr")
	require.ErrorContains(t, err, "no peer-memory module")
	require.ErrorContains(t, err, "dma-buf is not supported")

	gpu = newFakeGPU(t, 1<<20)
	_, _, err = gpuTarget(t, sim.Config{NoDmabuf: true}, gpu)
	require.ErrorContains(t, err, "ibv_reg_dmabuf_mr")
	require.ErrorContains(t, err, "not supported")
}
