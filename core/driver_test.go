package core

import (
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// fakeDriver stands for a transport a waiting thread can drive: its endAt-th
// Drive ends st (as reading the response would), other calls wait until
// their deadline (as a poll of an idle socket would); busy refuses, as a
// stream whose reader goroutine is reading does.
type fakeDriver struct {
	st       *Status
	endAt    int32
	busy     bool
	calls    atomic.Int32
	mu       sync.Mutex
	lastUtil time.Time
}

func (d *fakeDriver) Drive(until time.Time) bool {
	if d.busy {
		return false
	}
	d.mu.Lock()
	d.lastUtil = until
	d.mu.Unlock()
	if d.calls.Add(1) == d.endAt {
		d.st.Finish(StatusSuccess, "")
		return true
	}
	time.Sleep(time.Until(until))
	return true
}

func driven(d *fakeDriver) *Status {
	st := finished(StatusInProgress)
	d.st = st
	var drv Driver = d
	st.SetDriver(&drv)
	return st
}

// finishLater ends st with code after d, from another goroutine.
func finishLater(st *Status, d time.Duration, code StatusCode, msg string) {
	go func() {
		time.Sleep(d)
		st.Finish(code, msg)
	}()
}

// A thread blocking with BlockThread needs GOMAXPROCS >= 2 (one processor
// stays free): these tests set it.
func atLeastTwoProcs(t *testing.T) {
	if prev := runtime.GOMAXPROCS(0); prev < 2 {
		runtime.GOMAXPROCS(2)
		t.Cleanup(func() { runtime.GOMAXPROCS(prev) })
	}
}

// A thread waiting for a transfer it can drive makes the progress itself:
// nothing else ends the status here.
func TestWaitingThreadDrivesItsTransfer(t *testing.T) {
	atLeastTwoProcs(t)
	d := &fakeDriver{endAt: 3}
	st := driven(d)
	require.Equal(t, StatusSuccess, within(t, 10*time.Second, func() StatusCode { return st.WaitThread(-1) }))
	require.EqualValues(t, 3, d.calls.Load())

	d2 := &fakeDriver{endAt: 1}
	st2 := driven(d2)
	require.Equal(t, StatusSuccess, within(t, 10*time.Second, func() StatusCode {
		return WaitAllThread([]*Status{st2, finished(StatusSuccess)}, time.Hour)
	}), "statuses already ended do not stop the driving")
	require.EqualValues(t, 1, d2.calls.Load())
}

// A status that ends elsewhere (a timeout, a failure on another stream)
// ends every kind of wait: a thread driving looks at its statuses between
// drives; a thread whose driver cannot drive now (another reader) sleeps
// until woken; a goroutine parks and never drives (only a thread that owns
// its OS thread does).
func TestEndsFromElsewhereEndEveryWait(t *testing.T) {
	atLeastTwoProcs(t)
	for _, c := range []struct {
		name   string
		busy   bool
		thread bool
		drives bool
	}{
		{"driving thread", false, true, true},
		{"busy driver", true, true, false},
		{"parked goroutine", false, false, false},
	} {
		t.Run(c.name, func(t *testing.T) {
			d := &fakeDriver{endAt: -1, busy: c.busy}
			st := driven(d)
			finishLater(st, 20*time.Millisecond, ErrTimeout, "timed out")
			got := within(t, 10*time.Second, func() StatusCode {
				if c.thread {
					return st.WaitThread(-1)
				}
				return st.Wait(-1)
			})
			require.Equal(t, ErrTimeout, got)
			require.Equal(t, c.drives, d.calls.Load() > 0, "drove: %d calls", d.calls.Load())
		})
	}
}

// A wait with a timeout never drives past it, and reports IN_PROGRESS.
func TestDrivingRespectsTheWaitTimeout(t *testing.T) {
	atLeastTwoProcs(t)
	d := &fakeDriver{endAt: -1}
	st := driven(d)
	start := time.Now()
	require.Equal(t, StatusInProgress, st.WaitThread(30*time.Millisecond))
	d.mu.Lock()
	last := d.lastUtil
	d.mu.Unlock()
	require.False(t, last.After(start.Add(30*time.Millisecond+time.Millisecond)), "drove until %s past the wait's end", last.Sub(start))
}

// A transfer given two drivers has none, and a wait over statuses of
// different drivers drives neither.
func TestStatusesOfTwoDriversAreNotDriven(t *testing.T) {
	atLeastTwoProcs(t)
	a, b := &fakeDriver{endAt: -1}, &fakeDriver{endAt: -1}
	var da, db Driver = a, b

	st := NewStatus()
	st.SetDriver(&da)
	st.SetDriver(&da)
	require.Equal(t, Driver(a), driverOf([]*Status{st}), "the same driver twice is still one")
	st.SetDriver(&db)
	require.Nil(t, driverOf([]*Status{st}))
	st.SetDriver(&da)
	require.Nil(t, driverOf([]*Status{st}), "once spread, always spread")

	s1, s2 := finished(StatusInProgress), finished(StatusInProgress)
	s1.SetDriver(&da)
	s2.SetDriver(&db)
	require.Nil(t, driverOf([]*Status{s1, s2}))
	require.Nil(t, driverOf([]*Status{s1, NewStatus()}), "a status with no driver")
	go func() {
		time.Sleep(10 * time.Millisecond)
		s1.Finish(StatusSuccess, "")
		s2.Finish(StatusSuccess, "")
	}()
	require.Equal(t, StatusSuccess, within(t, 10*time.Second, func() StatusCode { return WaitAllThread([]*Status{s1, s2}, -1) }))
	require.Zero(t, a.calls.Load()+b.calls.Load())
}
