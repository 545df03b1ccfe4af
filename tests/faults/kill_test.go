package faults

import (
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/mori-go/mori-go/core"
	"github.com/mori-go/mori-go/core/engine"
)

// background keeps writing to a healthy peer and checking what landed,
// until stopped; every write must succeed.
type background struct {
	stop   chan struct{}
	done   chan struct{}
	ok     atomic.Int64
	mu     sync.Mutex
	failed []string
	lat    []time.Duration
}

func startBackground(e *engine.Engine, src, dst []byte, sd, dd core.MemoryDesc) *background {
	b := &background{stop: make(chan struct{}), done: make(chan struct{})}
	const size = 64 << 10
	go func() {
		defer close(b.done)
		for i := uint64(0); ; i++ {
			select {
			case <-b.stop:
				return
			default:
			}
			off := (i % uint64(len(src)/size)) * size
			fillPattern(src[off:off+size], 1000+i)
			start := time.Now()
			st := write(e, sd, dd, off, off, size)
			c := st.Wait(transferTimeout + waitSlack)
			lat := time.Since(start)
			b.mu.Lock()
			b.lat = append(b.lat, lat)
			switch {
			case c != core.StatusSuccess:
				b.failed = append(b.failed, fmt.Sprintf("write %d: %s: %s", i, c, st.Message()))
			case checkPattern(dst[off:off+size], 1000+i) != nil:
				b.failed = append(b.failed, fmt.Sprintf("write %d: %v", i, checkPattern(dst[off:off+size], 1000+i)))
			default:
				b.ok.Add(1)
			}
			b.mu.Unlock()
			time.Sleep(2 * time.Millisecond)
		}
	}()
	return b
}

func (b *background) finish(t *testing.T) (int64, []time.Duration) {
	t.Helper()
	close(b.stop)
	select {
	case <-b.done:
	case <-time.After(transferTimeout + 2*waitSlack):
		t.Fatal("the background writer did not stop")
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	require.Empty(t, b.failed, "writes to the healthy peer failed")
	return b.ok.Load(), b.lat
}

// TestPeerKilledMidTransfer: a target process is SIGKILLed while large
// writes into it are under way. Every transfer to it ends (fails, naming the
// peer) within its timeout; the engine keeps serving another peer before,
// during and after.
func TestPeerKilledMidTransfer(t *testing.T) {
	if !isolated(t) { // a stream failing under responses can crash the engine: see TestDeregisterRemoteEngineRacesResponses
		return
	}
	v := newEnv(t)
	a := v.engine("faults-initiator")
	other := v.engine("faults-other")
	link(t, a, other)

	const big = 32 << 20
	victim := startChild(t, childConfig{Role: "target", Key: "faults-victim", Host: "127.0.0.1", Mem: big})
	vd := victim.engineDesc()
	vmem := victim.memDesc()
	require.NoError(t, a.RegisterRemoteEngine(vd))

	src := v.alloc(big)
	fillPattern(src.Bytes(), 7)
	sd := register(t, a, src)
	osrc, odst := v.alloc(1<<20), v.alloc(1<<20)
	osd, odd := register(t, a, osrc), register(t, other, odst)

	// Before: both peers work.
	requireSuccess(t, write(a, sd, vmem, 0, 0, 1<<20), "write to the victim before the kill")
	// src holds pattern 7 from its first byte: the victim checks its copy.
	chk := victim.call(msg{Cmd: "check", Off: 0, Size: 1 << 20, Seed: 7}, 10*time.Second)
	require.True(t, chk.OK, "victim's memory: %s", chk.Err)
	bg := startBackground(a, osrc.Bytes(), odst.Bytes(), osd, odd)

	// Large writes, then SIGKILL while they are under way.
	const n = 16
	reqs := make([]engine.Request, n)
	for i := range reqs {
		reqs[i] = engine.Request{Local: sd, Remote: vmem, Ranges: []core.Range{{Size: big}}, UID: a.AllocateTransferUID()}
	}
	submitted := time.Now()
	sts := a.Submit(core.OpWrite, reqs)
	ends := watchEnds(sts)
	time.Sleep(30 * time.Millisecond)
	killed := time.Now()
	require.NoError(t, victim.cmd.Process.Kill())

	// New transfers submitted after the kill fail too.
	var late []*core.Status
	var lateSubmit []time.Duration
	for range 4 {
		s := time.Now()
		late = append(late, write(a, sd, vmem, 0, 0, 4096))
		lateSubmit = append(lateSubmit, time.Since(s))
	}
	lateEnds := watchEnds(late)

	require.True(t, ends.wait(transferTimeout+waitSlack), "a transfer to the killed peer did not end within its timeout")
	require.True(t, lateEnds.wait(transferTimeout+waitSlack), "a transfer submitted after the kill did not end within its timeout")
	var ttf, lateTTF []time.Duration
	succeeded := 0
	for i, at := range ends.times() {
		c := sts[i].Code()
		if c == core.StatusSuccess {
			succeeded++ // acknowledged by the target before it died
			continue
		}
		require.True(t, c.Failed())
		require.Contains(t, sts[i].Message(), `"faults-victim"`, "the failure names the peer")
		require.Less(t, at.Sub(submitted), transferTimeout+time.Second, "write %d ended after its timeout", i)
		ttf = append(ttf, at.Sub(killed))
	}
	require.NotEmpty(t, ttf, "every write finished before the kill: the test proved nothing")
	for i, at := range lateEnds.times() {
		require.True(t, late[i].Code().Failed(), "write submitted after the kill: %s", late[i].Code())
		require.Contains(t, late[i].Message(), `"faults-victim"`)
		lateTTF = append(lateTTF, at.Sub(killed))
	}

	// Once every stream to the dead peer is known broken, a new transfer
	// fails at once (the redial is refused, or not waited for).
	time.Sleep(200 * time.Millisecond)
	s := time.Now()
	redial := write(a, sd, vmem, 0, 0, 4096)
	redialSubmit := time.Since(s)
	require.True(t, redial.Wait(transferTimeout+waitSlack).Failed())
	redialTTF := time.Since(s)
	require.Contains(t, redial.Message(), `"faults-victim"`)

	// After: the other peer still works, and the dead one can be forgotten.
	okWrites, lat := bg.finish(t) // stop the writer first: it rewrites osrc and odst
	requireSuccess(t, write(a, osd, odd, 0, 0, 1<<20), "write to the other peer after the kill")
	require.Equal(t, osrc.Bytes()[:1<<20], odst.Bytes()[:1<<20])
	require.NoError(t, a.DeregisterRemoteEngine(vd))
	require.Eventually(t, func() bool { return a.InFlight() == 0 }, 5*time.Second, 10*time.Millisecond)

	t.Logf("killed the target with %d of %d 32 MiB writes in flight (%d had succeeded); time to failure after SIGKILL: %s",
		len(ttf), n, succeeded, durStats(ttf))
	t.Logf("writes submitted after the kill: Submit took %s; time to failure %s; first message: %s",
		durStats(lateSubmit), durStats(lateTTF), late[0].Message())
	t.Logf("write submitted 200 ms after the kill: Submit took %s, failed after %s: %s", redialSubmit, redialTTF, redial.Message())
	t.Logf("failure message: %s", sts[slices.IndexFunc(sts, func(s *core.Status) bool { return s.Code().Failed() })].Message())
	t.Logf("other peer: %d writes of 64 KiB succeeded during the test (latency %s)", okWrites, durStats(lat))
}

// TestInitiatorKilledMidTransferThenRestarted: an initiator process is
// SIGKILLed while its write into this process's engine is under way: one of
// the transfer's four parts has landed, the other three are still in the
// network (a proxy holds them, then the connections drop with the process).
// The target must (1) end the transfer's inbound status, so that an
// application polling PopInboundTransferStatus learns that it failed, and
// (2) accept the transfers of the initiator restarted under the same key,
// whose uids start again from 1.
func TestInitiatorKilledMidTransferThenRestarted(t *testing.T) {
	v := newEnv(t)
	b := v.engine("faults-decode")
	const size = 4 << 20 // four 1 MiB parts, one per stream
	dst := v.alloc(size)
	dd := register(t, b, dst)
	px := newProxy(t, dataAddr(b.Desc()))
	via := throughProxy(b.Desc(), px)
	viaBytes, err := via.MarshalBinary()
	require.NoError(t, err)
	desc := b.Desc()
	direct, err := desc.MarshalBinary()
	require.NoError(t, err)
	mb, err := dd.MarshalBinary()
	require.NoError(t, err)
	const key = "faults-prefill"
	cfg := childConfig{Role: "initiator", Key: key, Host: "127.0.0.1", Mem: size}

	first := startChild(t, cfg)
	require.True(t, first.call(msg{Cmd: "register", Engine: viaBytes, Mem: mb}, 15*time.Second).OK)
	px.holdFrom = 1 // streams 2..4 carry nothing from now on
	px.hold.Store(true)
	require.True(t, first.call(msg{Cmd: "write", N: 1, Size: size, Seed: 100, UID: 1, Async: true}, 15*time.Second).OK)
	require.Eventually(t, func() bool {
		st, ok := b.PopInboundTransferStatus(key, 1)
		return ok && st.Code == core.StatusInProgress
	}, 10*time.Second, 5*time.Millisecond, "the first part never arrived")
	time.Sleep(100 * time.Millisecond) // let the first part land whole
	killed := time.Now()
	first.kill()
	px.dropAll()

	// (1) The interrupted transfer's inbound status ends.
	var st core.InboundStatus
	var found bool
	for time.Since(killed) < stallTimeout+time.Second {
		st, found = b.PopInboundTransferStatus(key, 1)
		if !found || st.Code.Terminal() {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	stuck := found && st.Code == core.StatusInProgress
	t.Logf("initiator killed with 1 of 4 parts landed: %s after the kill the target's inbound status is %s (found %v) %q",
		time.Since(killed).Round(time.Millisecond), st.Code, found, st.Message)

	// (2) The restarted initiator (same key, uids from 1 again) is served.
	second := startChild(t, cfg)
	require.True(t, second.call(msg{Cmd: "register", Engine: direct, Mem: mb}, 15*time.Second).OK)
	res := second.call(msg{Cmd: "write", N: 1, Size: size, Seed: 200, UID: 1}, transferTimeout+40*time.Second)
	require.True(t, res.OK, res.Err)
	r := res.Result[0]
	t.Logf("restarted initiator, uid 1 again: %s %s", r.Code, r.Msg)
	assert.False(t, stuck, "the inbound status of the killed initiator's transfer stays IN_PROGRESS for ever: the target never learns it failed")
	require.Equal(t, core.StatusSuccess, r.Code, "the restarted initiator's transfer was refused: %s", r.Msg)
	require.NoError(t, checkPattern(dst.Bytes(), 200))
}

// TestRestartedInitiatorReusesUIDs: an initiator writes uids 1..4 and exits
// cleanly; the target application has not popped their statuses yet. The
// initiator restarts under the same key and writes uids 1..4 again (a new
// engine's uids start from 1). The new transfers must be served and their
// statuses replace the old ones.
func TestRestartedInitiatorReusesUIDs(t *testing.T) {
	v := newEnv(t)
	b := v.engine("faults-decode")
	const n, size = 4, 3 << 20 // 3 parts each
	dst := v.alloc(n * size)
	dd := register(t, b, dst)
	desc := b.Desc()
	bd, err := desc.MarshalBinary()
	require.NoError(t, err)
	mb, err := dd.MarshalBinary()
	require.NoError(t, err)
	const key = "faults-prefill"
	cfg := childConfig{Role: "initiator", Key: key, Host: "127.0.0.1", Mem: n * size}
	run := func(seed uint64) msg {
		c := startChild(t, cfg)
		require.True(t, c.call(msg{Cmd: "register", Engine: bd, Mem: mb}, 15*time.Second).OK)
		res := c.call(msg{Cmd: "write", N: n, Size: size, Seed: seed, UID: 1}, transferTimeout+40*time.Second)
		c.quit()
		return res
	}
	first := run(10)
	for i, r := range first.Result {
		require.Equal(t, core.StatusSuccess, r.Code, "first run, uid %d: %s", i+1, r.Msg)
	}
	second := run(20)
	var refused []string
	for i, r := range second.Result {
		if r.Code != core.StatusSuccess {
			refused = append(refused, fmt.Sprintf("uid %d: %s", i+1, r.Msg))
		}
	}
	t.Logf("restarted initiator reusing uids 1..%d of unpopped statuses: %d refused", n, len(refused))
	for _, r := range refused[:min(len(refused), 2)] {
		t.Logf("  %s", r)
	}
	require.Empty(t, refused, "a restarted initiator's transfers collide with the previous run's unpopped statuses")
	for i := range n {
		require.NoError(t, checkPattern(dst.Bytes()[i*size:(i+1)*size], 20+uint64(i)))
		st, ok := b.PopInboundTransferStatus(key, uint64(i+1))
		require.True(t, ok)
		require.Equal(t, core.StatusSuccess, st.Code, st.Message)
	}
}

// TestInitiatorLostMidFrame: the connection from the initiator drops in the
// middle of a frame (half of a 1 MiB write's payload has arrived). The
// target's inbound status must say that the connection was lost
// (ERR_CONNECTION), not that the request was invalid.
func TestInitiatorLostMidFrame(t *testing.T) {
	v := newEnv(t)
	a := v.engine("prefill", withStreams(1))
	b := v.engine("decode")
	px := newProxy(t, dataAddr(b.Desc()))
	require.NoError(t, a.RegisterRemoteEngine(throughProxy(b.Desc(), px)))
	const size = 1 << 20
	src, dst := v.alloc(size), v.alloc(size)
	sd, dd := register(t, a, src), register(t, b, dst)
	px.budget.Store(40 + 16 + size/2) // header, one entry, half the payload
	st := a.Submit(core.OpWrite, []engine.Request{{Local: sd, Remote: dd, Ranges: []core.Range{{Size: size}}, UID: 1}})
	require.Eventually(t, func() bool {
		in, ok := b.PopInboundTransferStatus("prefill", 1)
		return ok && in.Code == core.StatusInProgress
	}, 10*time.Second, 5*time.Millisecond)
	time.Sleep(50 * time.Millisecond)
	px.dropAll()
	require.True(t, st[0].Wait(transferTimeout+waitSlack).Failed())
	var in core.InboundStatus
	require.Eventually(t, func() bool {
		var ok bool
		in, ok = b.PopInboundTransferStatus("prefill", 1)
		return ok && in.Code.Terminal()
	}, 10*time.Second, 5*time.Millisecond)
	t.Logf("initiator's status: %s; target's inbound status: %s %q", st[0].Message(), in.Code, in.Message)
	require.Equal(t, core.ErrConnection, in.Code, "the target's status of a transfer cut mid-frame: %q", in.Message)
}
