package rdma_test

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/mori-go/mori-go/core"
	"github.com/mori-go/mori-go/core/engine"
	"github.com/mori-go/mori-go/verbs/sim"
)

// A sender can have 512 notifications in flight on one QP (1024 send
// slots, a WRITE and a SEND per transfer). The target must have a receive
// posted for each, or the sender's QP stalls on receiver-not-ready
// retries. With the target not polling at all (so nothing is reposted),
// every notification must still find a receive.
func TestSimNotificationsInFlightFindReceivesWithoutRNR(t *testing.T) {
	o := engineOpts{cfg: defaultRDMA()}
	o.cfg.QPPerTransfer = 1
	p, sd, dd := pairWithMemory(t, o)
	const n = 512
	reqs := make([]engine.Request, n)
	for i := range reqs {
		off := uint64(i%128) * 4096
		reqs[i] = engine.Request{Local: sd, Remote: dd, UID: uint64(i + 1), Ranges: []core.Range{{LocalOffset: off, RemoteOffset: off, Size: 4096}}}
	}
	p.fab.FreezeCQs()
	sts := p.a.Submit(core.OpWrite, reqs)
	require.Eventually(t, func() bool { return p.fab.Stats().Receives+p.fab.Stats().RNRNaks >= n }, 10*time.Second, time.Millisecond)
	require.Zero(t, p.fab.Stats().RNRNaks, "a notification found no receive posted")
	require.EqualValues(t, n, p.fab.Stats().Receives)
	p.fab.ThawCQs()
	for i, st := range sts {
		require.Equal(t, core.StatusSuccess, st.Wait(10*time.Second), st.Message())
		require.True(t, inbound(t, p.b, p.a.Key(), uint64(i+1)).Code == core.StatusSuccess)
	}
}

// The poller must not sleep while work is outstanding: Go rounds a short
// sleep of an idle process up to about 1 ms, which became the latency of
// every small transfer. Here every timer is rounded up to an hour, so a
// poller that sleeps with work outstanding never sees its completion.
func TestSimPollingDoesNotSleepWhileWorkIsOutstanding(t *testing.T) {
	fab := sim.NewFabric(sim.Config{TimerGranularity: time.Hour})
	o := engineOpts{cfg: defaultRDMA()}
	o.opts.NewTimer = fab.NewTimer
	a := newSimEngine(t, "prefill", fab.AddHost("a", nic0), o)
	b := newSimEngine(t, "decode", fab.AddHost("b", nic0), o)
	require.NoError(t, a.RegisterRemoteEngine(b.Desc()))
	require.NoError(t, b.RegisterRemoteEngine(a.Desc()))
	src, dst := alloc(t, 1<<16), alloc(t, 1<<16)
	fill(src.Bytes(), 3)
	sd, dd := register(t, a, src), register(t, b, dst)
	fab.SetLatency(time.Millisecond) // each work request completes after the poller's spin
	for uid := uint64(1); uid <= 10; uid++ {
		st := write(t, a, uid, sd, dd, core.Range{Size: 1 << 16})
		require.Equal(t, core.StatusSuccess, st.Wait(10*time.Second), st.Message())
	}
	require.Equal(t, src.Bytes(), dst.Bytes())
}
