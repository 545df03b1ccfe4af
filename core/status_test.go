package core

import (
	"errors"
	"fmt"
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// within runs f and fails the test if it does not return within d: a guard
// against hangs, not a timing assertion.
func within[T any](t *testing.T, d time.Duration, f func() T) T {
	t.Helper()
	ch := make(chan T, 1)
	go func() { ch <- f() }()
	select {
	case v := <-ch:
		return v
	case <-time.After(d):
		t.Fatalf("did not return within %s", d)
		panic("unreachable")
	}
}

func TestStatusLifecycle(t *testing.T) {
	s := NewStatus()
	require.Equal(t, StatusInit, s.Code())
	require.Equal(t, "", s.Message())
	s.Start()
	require.Equal(t, StatusInProgress, s.Code())
	require.True(t, s.Finish(ErrRemote, "refused"))
	require.False(t, s.Finish(StatusSuccess, ""), "the first terminal state sticks")
	require.False(t, s.Finish(ErrTimeout, "late"))
	require.Equal(t, ErrRemote, s.Code())
	require.Equal(t, "refused", s.Message())
	s.Start()
	require.Equal(t, ErrRemote, s.Code(), "Start leaves terminal states alone")
	select {
	case <-s.Done():
	default:
		t.Fatal("Done not closed")
	}

	s = NewStatus()
	require.True(t, s.Finish(StatusInProgress, "not terminal"))
	require.Equal(t, ErrInternal, s.Code(), "a non-terminal finish code is a bug")
}

func TestStatusWait(t *testing.T) {
	s := NewStatus()
	s.Start()
	require.Equal(t, StatusInProgress, s.Wait(0), "zero polls")
	require.Equal(t, StatusInProgress, s.Wait(time.Millisecond), "times out")
	go func() {
		time.Sleep(10 * time.Millisecond)
		s.Finish(StatusSuccess, "")
	}()
	require.Equal(t, StatusSuccess, within(t, 10*time.Second, func() StatusCode { return s.Wait(-1) }), "negative waits for ever")
	require.Equal(t, StatusSuccess, s.Wait(0))
	require.Equal(t, StatusSuccess, s.Wait(-1))
}

func finished(code StatusCode) *Status {
	s := NewStatus()
	s.Start()
	if code.Terminal() {
		s.Finish(code, code.String())
	}
	return s
}

func TestWaitAllSemantics(t *testing.T) {
	for _, how := range []WaitMode{ParkGoroutine, BlockThread} {
		t.Logf("wait mode %d", how)
		require.Equal(t, StatusSuccess, waitAll(nil, 0, how))
		require.Equal(t, StatusSuccess, waitAll(nil, -1, how))
		ok := finished(StatusSuccess)
		require.Equal(t, StatusSuccess, waitAll([]*Status{ok, ok}, 0, how))

		// Failure wins over others still in progress, whatever the timeout.
		running := finished(StatusInProgress)
		failed := finished(ErrNotFound)
		for _, timeout := range []time.Duration{0, time.Hour, -1} {
			require.Equal(t, ErrNotFound, within(t, 10*time.Second, func() StatusCode {
				return waitAll([]*Status{running, ok, failed}, timeout, how)
			}), "timeout %s", timeout)
		}

		// Zero polls: in progress, without waiting.
		require.Equal(t, StatusInProgress, waitAll([]*Status{ok, running}, 0, how))
		require.Equal(t, StatusInProgress, waitAll([]*Status{ok, running}, time.Millisecond, how), "ran out of time")
		require.Empty(t, running.watchers, "a wait that ended leaves no watcher behind")

		// An INIT status counts as not done.
		require.Equal(t, StatusInProgress, waitAll([]*Status{NewStatus()}, 0, how))
	}
}

func TestWaitAllFailureWhileWaiting(t *testing.T) {
	for _, how := range []WaitMode{ParkGoroutine, BlockThread} {
		t.Logf("wait mode %d", how)
		// The first status never ends; the second fails while WaitAll waits.
		// WaitAll must return the failure at once rather than wait for the
		// first one (for ever, with a negative timeout).
		for _, timeout := range []time.Duration{-1, time.Hour} {
			never := finished(StatusInProgress)
			late := finished(StatusInProgress)
			go func() {
				time.Sleep(10 * time.Millisecond)
				late.Finish(ErrTimeout, "timed out")
			}()
			got := within(t, 10*time.Second, func() StatusCode { return waitAll([]*Status{never, late}, timeout, how) })
			require.Equal(t, ErrTimeout, got)
			require.Empty(t, never.watchers)
		}
	}
}

func TestWaitAllNegativeWaitsForAll(t *testing.T) {
	for _, how := range []WaitMode{ParkGoroutine, BlockThread} {
		t.Logf("wait mode %d", how)
		sts := make([]*Status, 200)
		for i := range sts {
			sts[i] = finished(StatusInProgress)
		}
		sts = append(sts, sts[0]) // the same status twice is fine
		var wg sync.WaitGroup
		for i, s := range sts[:200] {
			wg.Add(1)
			go func() {
				defer wg.Done()
				time.Sleep(time.Duration(i%7) * time.Millisecond)
				s.Finish(StatusSuccess, "")
			}()
		}
		require.Equal(t, StatusSuccess, within(t, 10*time.Second, func() StatusCode { return waitAll(sts, -1, how) }))
		wg.Wait()
	}
}

func TestStatusCodes(t *testing.T) {
	for c := StatusCode(0); c < 25; c++ {
		require.Equal(t, c > ErrBegin, c.Failed(), "%s", c)
		require.Equal(t, c == StatusSuccess || c > ErrBegin, c.Terminal(), "%s", c)
		require.NotEmpty(t, c.String())
	}
	require.Equal(t, "ERR_TIMEOUT", ErrTimeout.String())
	require.Equal(t, "StatusCode(99)", StatusCode(99).String())

	base := errors.New("boom")
	err := Errorf(ErrRemote, "wrapped: %w", base)
	require.ErrorIs(t, err, base)
	require.Equal(t, "wrapped: boom", err.Error())
	require.Equal(t, ErrRemote, CodeOf(fmt.Errorf("outer: %w", err)))
	require.Equal(t, ErrInternal, CodeOf(base))
	require.Equal(t, StatusSuccess, CodeOf(nil))
	require.Equal(t, "boom", (&Error{Code: ErrRemote, Err: base}).Error())
}

// endCounter counts the ends it is told of (an EndObserver).
type endCounter struct{ calls int }

func (c *endCounter) TransferEnded(*Transfer) { c.calls++ }

func TestTransferEndsOnce(t *testing.T) {
	st := NewStatus()
	ends := &endCounter{}
	tr := &Transfer{Op: OpWrite, UID: 9, Peer: "p", Status: st, Observer: ends}
	tr.Begin(3)
	require.Equal(t, StatusInProgress, st.Code())
	tr.PartDone()
	tr.Fail(ErrRemote, "part %d refused", 2)
	tr.PartDone()
	tr.PartDone()
	require.Equal(t, ErrRemote, st.Code())
	require.Equal(t, `write uid 9 to "p": part 2 refused`, st.Message())
	require.Equal(t, 1, ends.calls)
	require.True(t, tr.Done())

	st = NewStatus()
	tr = &Transfer{Op: OpRead, Status: st}
	tr.Begin(0)
	require.Equal(t, StatusSuccess, st.Code(), "nothing to do is done")
}

func TestStatusDoneChannel(t *testing.T) {
	s := NewStatus()
	done := s.Done()
	select {
	case <-done:
		t.Fatal("closed before the status ended")
	default:
	}
	s.Finish(StatusSuccess, "")
	within(t, 10*time.Second, func() bool { <-done; return true })
	late := finished(ErrRemote)
	within(t, 10*time.Second, func() bool { <-late.Done(); return true })
}

// Statuses ended from other goroutines while threads wait on them: every
// waiter sees the outcome (run with -race).
func TestWaitThreadWakesEveryWaiter(t *testing.T) {
	for round := range 50 {
		sts := []*Status{finished(StatusInProgress), finished(StatusInProgress), finished(StatusInProgress)}
		var wg sync.WaitGroup
		got := make([]StatusCode, 4)
		for i := range got {
			wg.Add(1)
			go func() {
				defer wg.Done()
				if i == 0 {
					got[i] = sts[1].WaitThread(-1)
					return
				}
				got[i] = WaitAllThread(sts, time.Hour)
			}()
		}
		for i, s := range sts {
			code := StatusSuccess
			if round%2 == 1 && i == 2 {
				code = ErrRemote
			}
			s.Finish(code, "")
		}
		within(t, 10*time.Second, func() bool { wg.Wait(); return true })
		want := StatusSuccess
		if round%2 == 1 {
			want = ErrRemote
		}
		require.Equal(t, []StatusCode{StatusSuccess, want, want, want}, got)
	}
}

func TestWaitEveryWaitsForAllAndSkipsNil(t *testing.T) {
	running, failed := NewStatus(), NewStatus()
	failed.Finish(ErrRemote, "refused")
	sts := []*Status{running, nil, failed}
	require.Equal(t, ErrRemote, WaitAll([]*Status{running, failed}, -1), "fail fast: no wait for the one running")
	require.Equal(t, ErrRemote, WaitEvery(sts, 0), "a poll reports the failure found")

	type outcome struct {
		code         StatusCode
		runningEnded bool
	}
	got := make(chan outcome, 1)
	go func() {
		c := WaitEvery(sts, -1)
		got <- outcome{c, running.Code().Terminal()}
	}()
	running.Finish(StatusSuccess, "")
	o := <-got
	require.Equal(t, ErrRemote, o.code)
	require.True(t, o.runningEnded, "returned only once every status had ended")

	late := NewStatus()
	late.Finish(ErrTimeout, "late")
	require.Equal(t, ErrTimeout, WaitEvery([]*Status{late, failed}, -1), "the first failure in the order given")
	require.Equal(t, StatusSuccess, WaitEvery([]*Status{nil, running}, -1))
	require.Equal(t, StatusInProgress, WaitEvery([]*Status{NewStatus()}, time.Millisecond), "time ran out, no failure")
}

// Threads beyond GOMAXPROCS-1 that wait with BlockThread park instead, and
// every slot is given back.
func TestBlockThreadLeavesAProcessorFree(t *testing.T) {
	n := 2*runtime.GOMAXPROCS(0) + 2
	sts := make([]*Status, n)
	var wg sync.WaitGroup
	for i := range sts {
		sts[i] = finished(StatusInProgress)
		wg.Add(1)
		go func() {
			defer wg.Done()
			require.Equal(t, StatusSuccess, sts[i].WaitThread(time.Hour))
		}()
	}
	require.Eventually(t, func() bool {
		for _, s := range sts {
			s.mu.Lock()
			k := len(s.watchers)
			s.mu.Unlock()
			if k == 0 {
				return false
			}
		}
		return true
	}, 10*time.Second, time.Millisecond, "every waiter is waiting")
	require.LessOrEqual(t, int(blockedThreads.Load()), runtime.GOMAXPROCS(0)-1)
	for _, s := range sts {
		s.Finish(StatusSuccess, "")
	}
	within(t, 10*time.Second, func() bool { wg.Wait(); return true })
	require.Zero(t, blockedThreads.Load(), "every blocking slot given back")
}
