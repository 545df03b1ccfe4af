package rdma_test

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/mori-go/mori-go/core"
	"github.com/mori-go/mori-go/transport/rdma"
	"github.com/mori-go/mori-go/verbs/sim"
)

// qosOf returns the traffic class and service level of every connected QP
// of a host's NIC.
func qosOf(t *testing.T, h *sim.Host) [][2]uint8 {
	t.Helper()
	d := h.Device("mlx5_0")
	var out [][2]uint8
	for _, qpn := range d.QPNums() {
		a, ok := d.QPAttr(qpn)
		if ok && a.DestQPN != 0 {
			out = append(out, [2]uint8{a.AH.TrafficClass, a.AH.SL})
			require.Equal(t, uint16(2), a.PKeyIndex)
		}
	}
	require.NotEmpty(t, out)
	return out
}

func TestSimTrafficClassServiceLevelAndPKeyIndex(t *testing.T) {
	env := map[string]string{"MORI_IO_TC": "96", "MORI_RDMA_TC": "7", "MORI_RDMA_SL": "3"}
	o := engineOpts{cfg: defaultRDMA()}
	o.opts.Getenv = func(k string) string { return env[k] }
	o.opts.PKeyIndex = 2
	p := newSimPair(t, o)
	for _, h := range []*sim.Host{p.ha, p.hb} {
		for _, q := range qosOf(t, h) {
			require.Equal(t, [2]uint8{96, 3}, q, "MORI_IO_TC before MORI_RDMA_TC; MORI_RDMA_SL")
		}
	}

	o.cfg.TrafficClass, o.cfg.ServiceLevel = 104, 5
	p = newSimPair(t, o)
	for _, h := range []*sim.Host{p.ha, p.hb} {
		for _, q := range qosOf(t, h) {
			require.Equal(t, [2]uint8{104, 5}, q, "the config wins over the environment")
		}
	}
}

func TestTrafficClassAndServiceLevelAreChecked(t *testing.T) {
	h := sim.NewFabric(sim.Config{}).AddHost("h", nic0)
	for _, c := range []struct {
		cfg rdma.Config
		env map[string]string
		err string
	}{
		{cfg: rdma.Config{TrafficClass: 256}, err: "traffic class 256"},
		{cfg: rdma.Config{ServiceLevel: 16}, err: "service level 16"},
		{env: map[string]string{"MORI_IO_TC": "lossless"}, err: `MORI_IO_TC="lossless"`},
		{env: map[string]string{"MORI_RDMA_SL": "99"}, err: `MORI_RDMA_SL="99"`},
	} {
		_, err := nicsOf(t, h, c.cfg, rdma.Options{Getenv: func(k string) string { return c.env[k] }})
		require.ErrorContains(t, err, c.err)
		require.Equal(t, core.ErrInvalidArgs, core.CodeOf(err))
	}
}

// The CQs of a NIC take successive completion vectors, so that in event
// mode their interrupts spread over cores.
func TestSimCQsRotateCompletionVectors(t *testing.T) {
	o := engineOpts{cfg: defaultRDMA()}
	o.cfg.PollCQMode = 1
	p := newSimPair(t, o, sim.NIC{Name: "mlx5_0", CompVectors: 3})
	d := p.ha.Device("mlx5_0")
	seen := map[int]int{}
	for _, qpn := range d.QPNums() {
		v, ok := d.CompVectorOf(qpn)
		require.True(t, ok)
		seen[v]++
	}
	require.Len(t, seen, 3, "vectors used: %v", seen) // 8 QPs (4 each way) over 3 vectors
}

// A requester may not have more READs in flight than its responder serves:
// each side's max_rd_atomic is capped by the peer's max_dest_rd_atomic,
// which the endpoint carries (a NIC of another generation may serve fewer).
func TestSimReadDepthIsNegotiated(t *testing.T) {
	fab := sim.NewFabric(sim.Config{})
	a := newSimEngine(t, "prefill", fab.AddHost("a", sim.NIC{Name: "mlx5_0", ReadDepth: 16}), engineOpts{cfg: defaultRDMA()})
	b := newSimEngine(t, "decode", fab.AddHost("b", sim.NIC{Name: "mlx5_0", ReadDepth: 8}), engineOpts{cfg: defaultRDMA()})
	require.NoError(t, a.RegisterRemoteEngine(b.Desc()))
	require.NoError(t, b.RegisterRemoteEngine(a.Desc()))
	ma, mb := alloc(t, 1<<16), alloc(t, 1<<16)
	fill(mb.Bytes(), 6)
	da, db := register(t, a, ma), register(t, b, mb)
	st := read(t, a, 1, da, db, core.Range{Size: 1 << 16})
	require.Equal(t, core.StatusSuccess, st.Wait(10*time.Second), st.Message())
	require.Equal(t, mb.Bytes(), ma.Bytes())
	st = read(t, b, 1, db, da, core.Range{Size: 1 << 16})
	require.Equal(t, core.StatusSuccess, st.Wait(10*time.Second), st.Message())
}
