package tcp

import (
	"fmt"
	"math/rand/v2"
	"net"
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/mori-go/mori-go/core"
)

// A thread blocking in a wait needs GOMAXPROCS >= 2 (core.BlockThread).
func atLeastTwoProcs(t *testing.T) {
	if prev := runtime.GOMAXPROCS(0); prev < 2 {
		runtime.GOMAXPROCS(2)
		t.Cleanup(func() { runtime.GOMAXPROCS(prev) })
	}
}

// onThread runs f on a goroutine locked to its OS thread, as a C or Python
// caller of the library is, and waits for it.
func onThread(t *testing.T, f func()) {
	t.Helper()
	done := make(chan struct{})
	go func() {
		defer close(done)
		runtime.LockOSThread()
		defer runtime.UnlockOSThread()
		f()
	}()
	select {
	case <-done:
	case <-time.After(4 * ioDeadline):
		t.Fatal("the waiting thread never returned")
	}
}

// Threads that wait for their transfers read the responses themselves
// (while the reader goroutine reads those of other waiters, that park):
// several threads at once, writes of every size up to more than a read
// buffer and reads back of the same bytes, each waited for on its thread.
// Every byte arrives, every status succeeds, nothing outside the ranges is
// touched, and some responses were read by waiting threads.
func TestWaitingThreadsReadTheirOwnResponses(t *testing.T) {
	atLeastTwoProcs(t)
	const workers, rounds, area = 4, 150, 256 << 10
	ini := newNode(t, "drive-initiator", nil, nil)
	target := newNode(t, "drive-target", nil, nil)
	require.NoError(t, ini.b.AddPeer(target.desc()))
	src := newGuarded(t, ini.reg, workers*area)
	back := newGuarded(t, ini.reg, workers*area)
	dst := newGuarded(t, target.reg, workers*area)
	src.fill(5)
	dst.fill(9)

	var wg sync.WaitGroup
	errs := make(chan error, workers)
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			onThread(t, func() {
				rng := rand.New(rand.NewPCG(uint64(w), 7))
				base := uint64(w * area)
				for i := range rounds {
					size := uint64(1 + rng.IntN(80<<10))
					off := base + uint64(rng.IntN(area-int(size)+1))
					uid := uint64(w*10*rounds + 2*i)
					rg := []core.Range{{LocalOffset: off, RemoteOffset: off, Size: size}}
					if c := core.WaitAllThread([]*core.Status{ini.start(core.OpWrite, uid, src.r, target.key, dst.r, rg, 0)}, ioDeadline); c != core.StatusSuccess {
						errs <- fmt.Errorf("worker %d write %d: %s", w, i, c)
						return
					}
					if c := core.WaitAllThread([]*core.Status{ini.start(core.OpRead, uid+1, back.r, target.key, dst.r, rg, 0)}, ioDeadline); c != core.StatusSuccess {
						errs <- fmt.Errorf("worker %d read %d: %s", w, i, c)
						return
					}
					if got, want := back.mem()[off:off+size], src.mem()[off:off+size]; string(got) != string(want) {
						errs <- fmt.Errorf("worker %d round %d: the bytes read back differ from those written", w, i)
						return
					}
				}
			})
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		require.NoError(t, err)
	}
	src.checkGuards(t)
	back.checkGuards(t)
	dst.checkGuards(t)
	require.Positive(t, ini.b.ResponsesReadByWaiters(), "no waiting thread read a response itself")
	require.Zero(t, target.b.ResponsesReadByWaiters())
}

// A batch of transfers over one stream is driven by the thread waiting
// for all of them.
func TestWaitingThreadDrivesABatch(t *testing.T) {
	atLeastTwoProcs(t)
	ini := newNode(t, "drive-batch-initiator", nil, nil)
	target := newNode(t, "drive-batch-target", nil, nil)
	require.NoError(t, ini.b.AddPeer(target.desc()))
	src := newGuarded(t, ini.reg, 64<<10)
	dst := newGuarded(t, target.reg, 64<<10)
	src.fill(1)
	onThread(t, func() {
		for round := range 20 {
			var ts []*core.Transfer
			var sts []*core.Status
			for i := range 16 {
				st := core.NewStatus()
				off := uint64(i * 4 << 10)
				ts = append(ts, &core.Transfer{
					Op: core.OpWrite, UID: uint64(round*100 + i), Instance: uint64(round*100 + i), Peer: target.key, Local: src.r, Status: st,
					Ranges: []core.Range{{LocalOffset: off, RemoteOffset: off, Size: 4 << 10}},
					Remote: core.MemoryDesc{EngineKey: target.key, ID: dst.r.ID, Token: dst.r.Token(), Location: core.LocationCPU, Size: dst.r.Size},
				})
				sts = append(sts, st)
			}
			ini.b.SubmitBatch(ts)
			require.Equal(t, core.StatusSuccess, core.WaitAllThread(sts, ioDeadline))
		}
	})
	require.Equal(t, src.mem(), dst.mem())
	require.Positive(t, ini.b.ResponsesReadByWaiters())
}

// The target resets the stream while a thread waits in poll(2) for the
// acknowledgement: the thread sees the reset and its transfer fails with a
// connection error saying so, at once.
func TestDrivingThreadSeesTheStreamReset(t *testing.T) {
	atLeastTwoProcs(t)
	target := newNode(t, "drive-reset-target", nil, nil)
	var once sync.Once
	hook := func() {
		once.Do(func() {
			time.Sleep(50 * time.Millisecond) // the initiator is waiting by now
			target.b.srv.mu.Lock()
			for c := range target.b.srv.conns {
				c.(*net.TCPConn).SetLinger(0)
				c.Close()
			}
			target.b.srv.mu.Unlock()
		})
	}
	target.b.srv.beforeLand.Store(&hook)
	ini := newNode(t, "drive-reset-initiator", nil, nil)
	require.NoError(t, ini.b.AddPeer(target.desc()))
	src := newGuarded(t, ini.reg, 4<<10)
	dst := newGuarded(t, target.reg, 4<<10)
	// The serving goroutine may still be landing when the initiator sees the
	// reset: close the target (which waits for it) before dst is freed.
	t.Cleanup(func() { target.b.Close() })
	var st *core.Status
	var code core.StatusCode
	onThread(t, func() {
		st = ini.start(core.OpWrite, 1, src.r, target.key, dst.r, []core.Range{{Size: 4 << 10}}, 0)
		code = core.WaitAllThread([]*core.Status{st}, 3*ioDeadline)
	})
	require.Equal(t, core.ErrConnection, code, st.Message())
	require.Contains(t, st.Message(), "drive-reset-target")
	require.Contains(t, st.Message(), "lost")
}

// Closing the initiator's engine while a thread waits in poll(2) on one of
// its streams ends the wait with a failure (the close shuts the socket
// down under the thread) rather than leave it for the transfer timeout.
func TestCloseEndsADrivingThreadsWait(t *testing.T) {
	atLeastTwoProcs(t)
	target := newNode(t, "drive-close-target", nil, nil)
	dst := newGuarded(t, target.reg, 4<<10)
	held, _ := holdFirstLanding(t, target)
	ini := newNode(t, "drive-close-initiator", nil, nil)
	require.NoError(t, ini.b.AddPeer(target.desc()))
	src := newGuarded(t, ini.reg, 4<<10)
	go func() {
		<-held
		time.Sleep(50 * time.Millisecond) // the initiator is waiting by now
		ini.b.Close()
	}()
	var code core.StatusCode
	onThread(t, func() {
		st := ini.start(core.OpWrite, 1, src.r, target.key, dst.r, []core.Range{{Size: 4 << 10}}, 0)
		code = core.WaitAllThread([]*core.Status{st}, 3*ioDeadline)
	})
	require.True(t, code.Failed(), "wait ended with %s", code)
}
