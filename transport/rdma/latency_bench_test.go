package rdma_test

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/mori-go/mori-go/core"
	"github.com/mori-go/mori-go/verbs/sim"
)

// BenchmarkSimSmallWriteLatency times one 4 KiB write at a time, start to
// status, in polling and in event mode, interleaved in one run. On the
// simulator the figure is the backend's own cost plus the simulator's (no
// wire); the point is the ratio, and that polling stays far below the ~1
// ms that a sleeping poller paid per transfer (issue 18, item 4). Run with
// -count to interleave the modes.
func BenchmarkSimSmallWriteLatency(b *testing.B) {
	for _, mode := range []struct {
		name string
		poll int
	}{{"polling", 0}, {"event", 1}} {
		b.Run(mode.name, func(b *testing.B) {
			o := engineOpts{cfg: defaultRDMA()}
			o.cfg.QPPerTransfer, o.cfg.PollCQMode = 1, mode.poll
			p := newBenchPair(b, o)
			src, dst := alloc(b, 4096), alloc(b, 4096)
			sd, dd := register(b, p.a, src), register(b, p.b, dst)
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				st := write(b, p.a, uint64(i+1), sd, dd, core.Range{Size: 4096})
				if code := st.Wait(10 * time.Second); code != core.StatusSuccess {
					b.Fatalf("write %d: %s", i, st.Message())
				}
			}
		})
	}
}

// newBenchPair is newSimPair for a benchmark.
func newBenchPair(b *testing.B, o engineOpts) *simPair {
	b.Helper()
	p := &simPair{fab: sim.NewFabric(sim.Config{})}
	p.ha, p.hb = p.fab.AddHost("a", nic0), p.fab.AddHost("b", nic0)
	p.a = newSimEngine(b, "prefill", p.ha, o)
	p.b = newSimEngine(b, "decode", p.hb, o)
	require.NoError(b, p.a.RegisterRemoteEngine(p.b.Desc()))
	require.NoError(b, p.b.RegisterRemoteEngine(p.a.Desc()))
	return p
}
