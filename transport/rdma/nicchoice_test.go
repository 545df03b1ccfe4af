package rdma_test

import (
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/mori-go/mori-go/core"
	"github.com/mori-go/mori-go/core/engine"
	"github.com/mori-go/mori-go/stack"
	"github.com/mori-go/mori-go/transport/rdma"
	"github.com/mori-go/mori-go/verbs/sim"
)

// twoGPUs is a fake GPU driver whose devices 0 and 1 sit on the two
// sockets of the "two-sockets" tree (next to mlx5_0 and mlx5_2).
type twoGPUs struct{ *fakeGPU }

func (twoGPUs) PCIBusID(device int) (string, error) {
	switch device {
	case 0:
		return "0000:03:00.0", nil
	case 1:
		return "0000:83:00.0", nil
	}
	return "", fmt.Errorf("no GPU %d", device)
}

// connectedQPs counts the connected QPs of a host's NIC.
func connectedQPs(h *sim.Host, nic string) int {
	d := h.Device(nic)
	n := 0
	for _, qpn := range d.QPNums() {
		if a, ok := d.QPAttr(qpn); ok && a.DestQPN != 0 {
			n++
		}
	}
	return n
}

// SGLang creates the backend first and registers its KV cache after: the
// NIC must still be the one nearest the memory's GPU, chosen per region,
// on both sides, and host memory goes on the default NIC.
func TestSimNICIsChosenPerRegionByItsGPU(t *testing.T) {
	fab := sim.NewFabric(sim.Config{})
	ha, hb := threeNICs(fab, "a"), threeNICs(fab, "b")
	topo := rdma.Topology{Root: fakeSysfs(t, "two-sockets")}
	start := func(key string, h *sim.Host, gpu twoGPUs) *engine.Engine {
		e, err := stack.New(stack.Config{Config: engine.Config{
			Key: key, Mode: engine.ModeRDMA, GPU: gpu, Logger: testLogger(), TransferTimeout: 20 * time.Second,
		}, RDMA: rdma.NewFactory(h, rdma.Options{Topology: topo, Getenv: noEnv})})
		require.NoError(t, err)
		t.Cleanup(func() { require.NoError(t, e.Close()) })
		createRDMA(t, e, defaultRDMA()) // before any memory, as SGLang does
		return e
	}
	ga, gb := twoGPUs{newFakeGPU(t, 1<<20)}, twoGPUs{newFakeGPU(t, 1<<20)}
	a, b := start("prefill", ha, ga), start("decode", hb, gb)
	src, err := a.RegisterMemory(ga.base(), 1<<20, 1, core.LocationGPU) // GPU 1: mlx5_2
	require.NoError(t, err)
	dst, err := b.RegisterMemory(gb.base(), 1<<20, 0, core.LocationGPU) // GPU 0: mlx5_0
	require.NoError(t, err)
	require.NoError(t, a.RegisterRemoteEngine(b.Desc()))
	require.NoError(t, b.RegisterRemoteEngine(a.Desc()))

	fill(ga.mem, 4)
	st := write(t, a, 1, src, dst, core.Range{Size: 1 << 20})
	require.Equal(t, core.StatusSuccess, st.Wait(10*time.Second), st.Message())
	require.Equal(t, ga.mem, gb.mem)
	qps := defaultRDMA().QPPerTransfer
	// Each side's QPs, as initiator and as target, sit on the NIC of its
	// GPU.
	require.Equal(t, 2*qps, connectedQPs(ha, "mlx5_2"))
	require.Zero(t, connectedQPs(ha, "mlx5_0")+connectedQPs(ha, "mlx5_1"))
	require.Equal(t, 2*qps, connectedQPs(hb, "mlx5_0"))
	require.Zero(t, connectedQPs(hb, "mlx5_1")+connectedQPs(hb, "mlx5_2"))

	// Host memory goes on the default NIC: a second lane, connected when
	// the first transfer needs it.
	host := alloc(t, 1<<16)
	fill(host.Bytes(), 8)
	st = write(t, a, 2, register(t, a, host), dst, core.Range{Size: 1 << 16})
	require.Equal(t, core.StatusSuccess, st.Wait(10*time.Second), st.Message())
	require.Equal(t, host.Bytes(), gb.mem[:1<<16])
	require.Equal(t, qps, connectedQPs(ha, "mlx5_0"))
	require.Equal(t, 3*qps, connectedQPs(hb, "mlx5_0"), "the target's side of the new lane is on its GPU's NIC too")
	ready, total := a.DataBackend().(*rdma.Backend).Ready(b.Key())
	require.Equal(t, 2*qps, total)
	require.Equal(t, total, ready)
}
