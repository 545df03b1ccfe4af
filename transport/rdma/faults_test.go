package rdma_test

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/mori-go/mori-go/core"
	"github.com/mori-go/mori-go/transport/rdma"
	"github.com/mori-go/mori-go/verbs"
	"github.com/mori-go/mori-go/verbs/sim"
)

// usableAgain waits until a write from a to b succeeds again after a fault
// (QPs are rebuilt in the background).
func usableAgain(t *testing.T, p *simPair, sd, dd core.MemoryDesc, uid *uint64) {
	t.Helper()
	rb := p.a.DataBackend().(*rdma.Backend)
	require.Eventually(t, func() bool {
		ready, total := rb.Ready(p.b.Key())
		return total > 0 && ready == total
	}, 20*time.Second, time.Millisecond, "the queue pairs were not rebuilt")
	require.Eventually(t, func() bool {
		*uid++
		st := write(t, p.a, *uid, sd, dd, core.Range{Size: 4096}, core.Range{LocalOffset: 8192, RemoteOffset: 8192, Size: 4096})
		return st.Wait(10*time.Second) == core.StatusSuccess
	}, 20*time.Second, 10*time.Millisecond, "the engines did not recover")
}

// failed checks that st ended with ERR_RDMA_OP and a message naming the
// peer and each of parts.
func failed(t *testing.T, st *core.Status, peer string, parts ...string) {
	t.Helper()
	code := st.Wait(20 * time.Second)
	require.Equal(t, core.ErrRDMAOp, code, st.Message())
	require.Contains(t, st.Message(), peer)
	for _, s := range parts {
		require.Contains(t, st.Message(), s)
	}
}

func pairWithMemory(t *testing.T, o engineOpts, nics ...sim.NIC) (*simPair, core.MemoryDesc, core.MemoryDesc) {
	p := newSimPair(t, o, nics...)
	src, dst := alloc(t, 1<<20), alloc(t, 1<<20)
	fill(src.Bytes(), 5)
	return p, register(t, p.a, src), register(t, p.b, dst)
}

func TestSimRemoteAccessErrorFailsTheTransferAndTheQPRecovers(t *testing.T) {
	p, sd, dd := pairWithMemory(t, engineOpts{})
	forged := dd
	forged.Size = 1 << 30 // the initiator believes the region is bigger
	st := write(t, p.a, 1, sd, forged, core.Range{RemoteOffset: 512 << 20, Size: 4096})
	failed(t, st, p.b.Key(), "IBV_WC_REM_ACCESS_ERR", "RDMA write")
	// The target learns the transfer failed.
	in := inbound(t, p.b, p.a.Key(), 1)
	require.True(t, in.Code.Failed())
	require.Contains(t, in.Message, "gave up")
	uid := uint64(100)
	usableAgain(t, p, sd, dd, &uid)
}

func TestSimWriteToDeregisteredMemoryFails(t *testing.T) {
	p, sd, dd := pairWithMemory(t, engineOpts{})
	require.NoError(t, p.b.DeregisterMemory(dd))
	st := write(t, p.a, 1, sd, dd, core.Range{Size: 64})
	failed(t, st, p.b.Key(), "IBV_WC_REM_ACCESS_ERR", "deregistered")
}

func TestSimUnreachablePeerFailsWithRetryExceeded(t *testing.T) {
	p, sd, dd := pairWithMemory(t, engineOpts{})
	da, db := p.ha.Device("mlx5_0"), p.hb.Device("mlx5_0")
	p.fab.Partition(da, db)
	st := write(t, p.a, 1, sd, dd, core.Range{Size: 4096})
	failed(t, st, p.b.Key(), "IBV_WC_RETRY_EXC_ERR", "retry counter exceeded")
	p.fab.Heal(da, db)
	uid := uint64(100)
	usableAgain(t, p, sd, dd, &uid)
}

func TestSimLostPacketsAreRetransmitted(t *testing.T) {
	p, sd, dd := pairWithMemory(t, engineOpts{})
	da := p.ha.Device("mlx5_0")
	p.fab.LosePackets(da, 5) // fewer than retry_cnt 7 per work request
	st := write(t, p.a, 1, sd, dd, core.Range{Size: 1 << 20})
	require.Equal(t, core.StatusSuccess, st.Wait(10*time.Second), st.Message())

	p.fab.LosePackets(da, 1000) // more than any retry count
	st = write(t, p.a, 2, sd, dd, core.Range{Size: 4096})
	failed(t, st, p.b.Key(), "IBV_WC_RETRY_EXC_ERR")
	p.fab.LosePackets(da, 0)
	uid := uint64(100)
	usableAgain(t, p, sd, dd, &uid)
}

func TestSimPortDownFailsAndComesBack(t *testing.T) {
	p, sd, dd := pairWithMemory(t, engineOpts{})
	db := p.hb.Device("mlx5_0")
	p.fab.SetPortState(db, verbs.PortDown)
	st := write(t, p.a, 1, sd, dd, core.Range{Size: 4096})
	failed(t, st, p.b.Key(), "IBV_WC_RETRY_EXC_ERR")
	p.fab.SetPortState(db, verbs.PortActive)
	uid := uint64(100)
	usableAgain(t, p, sd, dd, &uid)
}

func TestSimFatalQPErrorFailsWorkInFlightAndRecovers(t *testing.T) {
	o := engineOpts{cfg: defaultRDMA()}
	o.cfg.QPPerTransfer = 1
	p, sd, dd := pairWithMemory(t, o)
	ranges := make([]core.Range, 64)
	for i := range ranges {
		ranges[i] = core.Range{LocalOffset: uint64(i * 8192), RemoteOffset: uint64(i * 8192), Size: 4096}
	}
	p.fab.SetLatency(time.Hour) // the work stays in flight
	st := write(t, p.a, 1, sd, dd, ranges...)
	da := p.ha.Device("mlx5_0")
	for _, qpn := range da.QPNums() {
		p.fab.FailQP(da, qpn)
	}
	code := st.Wait(20 * time.Second)
	require.Equal(t, core.ErrRDMAOp, code, st.Message())
	require.Contains(t, st.Message(), p.b.Key())
	// Either the async event or the flushed completion reports it first.
	require.Regexp(t, "IBV_EVENT_QP_FATAL|IBV_WC_WR_FLUSH_ERR", st.Message())
	p.fab.SetLatency(0)
	uid := uint64(100)
	usableAgain(t, p, sd, dd, &uid)
}

func TestSimCQOverflowFailsTransfersInsteadOfHanging(t *testing.T) {
	fab := newFabric()
	fab.CapCQs(4) // smaller than the send queue the backend sized it for
	ha, hb := fab.AddHost("a", nic0), fab.AddHost("b", nic0)
	cfg := defaultRDMA()
	cfg.QPPerTransfer, cfg.PostBatchSize = 1, 1 // every work request signaled
	a := newSimEngine(t, "prefill", ha, engineOpts{cfg: cfg})
	b := newSimEngine(t, "decode", hb, engineOpts{cfg: cfg})
	require.NoError(t, a.RegisterRemoteEngine(b.Desc()))
	require.NoError(t, b.RegisterRemoteEngine(a.Desc()))
	src, dst := alloc(t, 1<<20), alloc(t, 1<<20)
	sd, dd := register(t, a, src), register(t, b, dst)
	ranges := make([]core.Range, 32)
	for i := range ranges {
		ranges[i] = core.Range{LocalOffset: uint64(i * 8192), RemoteOffset: uint64(i * 8192), Size: 4096}
	}
	fab.FreezeCQs() // nobody polls: completions pile up
	st := write(t, a, 1, sd, dd, ranges...)
	code := st.Wait(20 * time.Second)
	require.Equal(t, core.ErrRDMAOp, code, st.Message())
	require.Regexp(t, "IBV_EVENT_CQ_ERR|completion queue overrun", st.Message())
	fab.ThawCQs()
	fab.CapCQs(0)
	// Registering the peer again rebuilds every QP and CQ.
	require.NoError(t, a.RegisterRemoteEngine(b.Desc()))
	st = write(t, a, 2, sd, dd, ranges...)
	require.Equal(t, core.StatusSuccess, st.Wait(10*time.Second), st.Message())
}

func TestSimDeregisterRemoteEngineFailsWorkInFlight(t *testing.T) {
	o := engineOpts{cfg: defaultRDMA()}
	o.cfg.QPPerTransfer = 1
	o.opts.SendQueueDepth = 2
	p, sd, dd := pairWithMemory(t, o)
	ranges := make([]core.Range, 64)
	for i := range ranges {
		ranges[i] = core.Range{LocalOffset: uint64(i * 8192), RemoteOffset: uint64(i * 8192), Size: 4096}
	}
	p.fab.SetLatency(time.Hour) // the work stays in flight
	st := write(t, p.a, 1, sd, dd, ranges...)
	require.NoError(t, p.a.DeregisterRemoteEngine(p.b.Desc()))
	require.Equal(t, core.ErrConnection, st.Wait(20*time.Second), st.Message())
	require.Contains(t, st.Message(), "deregistered")
}

func TestSimTimedOutTransferReleasesItsMemory(t *testing.T) {
	o := engineOpts{cfg: defaultRDMA(), timeout: 200 * time.Millisecond}
	o.cfg.QPPerTransfer = 1
	o.opts.SendQueueDepth = 2
	p, sd, dd := pairWithMemory(t, o)
	ranges := make([]core.Range, 100)
	for i := range ranges {
		ranges[i] = core.Range{LocalOffset: uint64(i * 8192), RemoteOffset: uint64(i * 8192), Size: 4096}
	}
	p.fab.SetLatency(50 * time.Millisecond) // 100 requests, one after the other: far past the timeout
	st := write(t, p.a, 1, sd, dd, ranges...)
	require.Equal(t, core.ErrTimeout, st.Wait(20*time.Second), st.Message())
	// The rest of the transfer is dropped, not posted: deregistering the
	// memory waits only for what was posted, then returns.
	p.fab.SetLatency(0)
	require.NoError(t, p.a.DeregisterMemory(sd))
}

func TestSimDeregisterLocalMemoryWaitsForPostedWork(t *testing.T) {
	o := engineOpts{cfg: defaultRDMA()}
	p, sd, dd := pairWithMemory(t, o)
	p.fab.SetLatency(10 * time.Millisecond)
	st := write(t, p.a, 1, sd, dd, core.Range{Size: 1 << 20})
	require.NoError(t, p.a.DeregisterMemory(sd))
	// Deregistration returned only once the NIC was done with the memory:
	// the write it had posted completes (its status is set just after the
	// completion released the memory, so wait for it briefly).
	require.Equal(t, core.StatusSuccess, st.Wait(5*time.Second), st.Message())
}

func TestSimNoWriteLandsAfterRemoteDeregistration(t *testing.T) {
	o := engineOpts{cfg: defaultRDMA()}
	p := newSimPair(t, o)
	const n = 4 << 20
	src, dst := alloc(t, n), alloc(t, n)
	sd, dd := register(t, p.a, src), register(t, p.b, dst)
	p.fab.SetLatency(time.Millisecond)
	var sts []*core.Status
	for i := 0; i < 8; i++ {
		sts = append(sts, write(t, p.a, uint64(i+1), sd, dd, core.Range{Size: n}))
	}
	require.NoError(t, p.b.DeregisterMemory(dd))
	poison := dst.Bytes()
	for i := range poison {
		poison[i] = 0xAB
	}
	for _, st := range sts {
		c := st.Wait(20 * time.Second)
		require.True(t, c.Terminal())
		if c.Failed() {
			require.Contains(t, st.Message(), "IBV_WC_")
		}
	}
	for i, v := range dst.Bytes() {
		if v != 0xAB {
			t.Fatalf("byte %d written after deregistration", i)
		}
	}
}

func TestSimEngineCloseEndsTransfersInFlight(t *testing.T) {
	o := engineOpts{cfg: defaultRDMA()}
	o.cfg.QPPerTransfer = 1
	o.opts.SendQueueDepth = 2
	p, sd, dd := pairWithMemory(t, o)
	ranges := make([]core.Range, 64)
	for i := range ranges {
		ranges[i] = core.Range{LocalOffset: uint64(i * 8192), RemoteOffset: uint64(i * 8192), Size: 4096}
	}
	p.fab.SetLatency(time.Hour) // the work stays in flight
	st := write(t, p.a, 1, sd, dd, ranges...)
	require.NoError(t, p.a.Close())
	require.True(t, st.Wait(20*time.Second).Failed(), st.Message())
}

func TestSimEventModeFaultsAndRecovery(t *testing.T) {
	o := engineOpts{cfg: defaultRDMA()}
	o.cfg.PollCQMode = 1
	p, sd, dd := pairWithMemory(t, o)
	forged := dd
	forged.Size = 1 << 30
	failed(t, write(t, p.a, 1, sd, forged, core.Range{RemoteOffset: 512 << 20, Size: 4096}), p.b.Key(), "IBV_WC_REM_ACCESS_ERR")
	da, db := p.ha.Device("mlx5_0"), p.hb.Device("mlx5_0")
	p.fab.Partition(da, db)
	failed(t, write(t, p.a, 2, sd, dd, core.Range{Size: 4096}), p.b.Key(), "IBV_WC_RETRY_EXC_ERR")
	p.fab.Heal(da, db)
	uid := uint64(100)
	usableAgain(t, p, sd, dd, &uid)
	require.Equal(t, core.StatusSuccess, inbound(t, p.b, p.a.Key(), uid).Code)
}

// Registering a peer twice at once leaves one working connection: the
// second full CONNECT must not drop the QPs of the one that is kept.
func TestSimConcurrentRegistrationOfOnePeer(t *testing.T) {
	p, sd, dd := pairWithMemory(t, engineOpts{})
	errs := make(chan error, 4)
	for i := 0; i < 4; i++ {
		go func() { errs <- p.a.RegisterRemoteEngine(p.b.Desc()) }()
	}
	for i := 0; i < 4; i++ {
		require.NoError(t, <-errs)
	}
	st := write(t, p.a, 1, sd, dd, core.Range{Size: 4096})
	require.Equal(t, core.StatusSuccess, st.Wait(10*time.Second), st.Message())
}
