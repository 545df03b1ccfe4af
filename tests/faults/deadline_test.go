package faults

import (
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/mori-go/mori-go/core"
	"github.com/mori-go/mori-go/core/engine"
	"github.com/mori-go/mori-go/stack"
)

// TestManyTransfersTimeOutTogether: 10,000 writes to a peer whose streams
// are held by a proxy (accepted, never delivered: no response comes, the
// streams do not stall) all reach their deadline within the same moment,
// while the same engine keeps writing to a healthy peer. Every held write
// ends ERR_TIMEOUT within its timeout; every write to the healthy peer
// succeeds, that is within the same timeout, through the storm of
// expiring timers: the deadlines do not stall new transfers.
func TestManyTransfersTimeOutTogether(t *testing.T) {
	const (
		// Long enough that a healthy write's own deadline is not reached
		// on a starved machine under the race detector (CI), short enough
		// for a quick test.
		timeout = 3 * time.Second
		n       = 10000
		size    = 64
	)
	v := newEnv(t)
	long := func(c *stack.Config) { c.TCP.StallTimeout = time.Minute } // the deadline, not a stall, ends them
	a := v.engine("faults-deadline-a", withTimeout(timeout), long)
	held := v.engine("faults-deadline-held")
	healthy := v.engine("faults-deadline-healthy")
	px := newProxy(t, dataAddr(held.Desc()))
	px.holdFrom = 0
	require.NoError(t, a.RegisterRemoteEngine(throughProxy(held.Desc(), px)))
	link(t, a, healthy)
	src, hdst, okdst := v.alloc(n*size), v.alloc(n*size), v.alloc(1<<20)
	sd, hd, od := register(t, a, src), register(t, held, hdst), register(t, healthy, okdst)
	fillPattern(src.Bytes(), 5)
	requireSuccess(t, write(a, sd, hd, 0, 0, size), "write through the proxy before it holds")

	// The healthy peer's writer: 4 KiB writes one after another, before,
	// during and after the storm; each must succeed.
	var stop atomic.Bool
	var mu sync.Mutex
	var lat []time.Duration
	var lats [3][]time.Duration // before, during, after
	phase := atomic.Int32{}
	failures := []string{}
	done := make(chan struct{})
	go func() {
		defer close(done)
		for i := uint64(0); !stop.Load(); i++ {
			off := (i % 256) * 4096
			start := time.Now()
			st := write(a, sd, od, 0, off, 4096)
			c := st.Wait(timeout + waitSlack)
			d := time.Since(start)
			mu.Lock()
			lat = append(lat, d)
			lats[phase.Load()] = append(lats[phase.Load()], d)
			if c != core.StatusSuccess {
				failures = append(failures, c.String()+": "+st.Message())
			}
			mu.Unlock()
			time.Sleep(time.Millisecond)
		}
	}()
	time.Sleep(200 * time.Millisecond)

	px.hold.Store(true)
	reqs := make([]engine.Request, n)
	for i := range reqs {
		reqs[i] = engine.Request{Local: sd, Remote: hd, Ranges: []core.Range{{LocalOffset: uint64(i) * size, RemoteOffset: uint64(i) * size, Size: size}}, UID: a.AllocateTransferUID()}
	}
	phase.Store(1)
	submitted := time.Now()
	sts := a.Submit(core.OpWrite, reqs)
	submitTook := time.Since(submitted)
	// One waiter for all (not a goroutine per status, which would load
	// the scheduler more than the engine does): the held writes end
	// together, so the time the last one is seen ended is when they did.
	for i, st := range sts {
		c := st.Wait(timeout + waitSlack + 5*time.Second)
		require.Equal(t, core.ErrTimeout, c, "held write %d: %s", i, st.Message())
	}
	allEnded := time.Since(submitted)
	phase.Store(2)
	time.Sleep(200 * time.Millisecond)
	stop.Store(true)
	<-done
	mu.Lock()
	defer mu.Unlock()
	require.Empty(t, failures, "writes to the healthy peer failed during the storm of deadlines")
	require.NotEmpty(t, lats[1], "no write to the healthy peer ran during the storm")
	t.Logf("%d held writes: Submit took %s; all ERR_TIMEOUT, the last seen ended %s after submission (timeout %s): %s",
		n, submitTook.Round(time.Microsecond), allEnded.Round(time.Millisecond), timeout, sts[0].Message())
	t.Logf("writes of 4 KiB to the healthy peer, all intact and successful: before %s; during %s; after %s",
		durStats(lats[0]), durStats(lats[1]), durStats(lats[2]))
	require.NoError(t, checkPattern(okdst.Bytes()[:4096], 5))
}
