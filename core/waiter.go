package core

import (
	"runtime"
	"sync/atomic"
	"time"
)

// WaitMode says how a waiting caller sleeps.
type WaitMode int

const (
	// ParkGoroutine parks the calling goroutine on a channel: the usual Go
	// wait, which holds no OS thread while it sleeps.
	ParkGoroutine WaitMode = iota
	// BlockThread blocks the calling OS thread in the kernel (a futex on
	// Linux). It suits callers that own their thread and have nothing else
	// to run on it: a C or Python thread in the C ABI. A goroutine that
	// came in from C is locked to its thread, so parking it makes the
	// scheduler hand the thread's processor away and, at the wake-up, hand
	// one back through a second thread; blocking in the kernel is one
	// wake-up from the goroutine that ends the transfer to the waiter.
	//
	// A thread blocked in the kernel keeps its processor (a P) until the
	// scheduler's monitor takes it back, 20 µs to 10 ms later. So that one
	// processor always stays free for the goroutines that complete
	// transfers, at most GOMAXPROCS-1 threads block at once; further
	// waiters park (as ParkGoroutine).
	BlockThread
)

// blockedThreads counts the threads blocked in BlockThread waits.
var blockedThreads atomic.Int32

// waiter is one caller of Wait or WaitAll: each status it watches counts
// it down as it ends, a failure ends the wait at once.
type waiter struct {
	left   atomic.Int64  // statuses watched and not ended
	failed atomic.Uint32 // the first failure code seen, 0 while none
	how    WaitMode
	ch     chan struct{} // ParkGoroutine: one token per wake-up
	word   atomic.Uint32 // BlockThread: 1 once there is news (the futex word)
	// asleep is 1 while the thread is (about to be) blocked on word: a
	// status that ends wakes the futex only then (a thread driving its
	// transfers needs no wake-up system call).
	asleep atomic.Uint32
	// watched are the statuses waited for, whose driver a BlockThread
	// waiter may run (driver.go).
	watched []*Status
}

// newWaiter returns a waiter that sleeps as how says, or parks when no
// thread may block now; release it once the wait is over.
func newWaiter(how WaitMode) *waiter {
	if how == BlockThread && haveFutex {
		if int(blockedThreads.Add(1)) < runtime.GOMAXPROCS(0) {
			return &waiter{how: BlockThread}
		}
		blockedThreads.Add(-1)
	}
	return &waiter{how: ParkGoroutine, ch: make(chan struct{}, 1)}
}

// release gives back the waiter's blocking slot.
func (w *waiter) release() {
	if w.how == BlockThread {
		blockedThreads.Add(-1)
	}
}

// ended is called by a status the waiter watches once it is terminal.
func (w *waiter) ended(code StatusCode) {
	if code.Failed() {
		w.failed.CompareAndSwap(0, uint32(code))
	}
	if w.left.Add(-1) > 0 && !code.Failed() {
		return
	}
	if w.how == ParkGoroutine {
		select {
		case w.ch <- struct{}{}:
		default: // a wake-up is pending already
		}
		return
	}
	w.word.Store(1)
	if w.asleep.Load() != 0 {
		futexWake(&w.word)
	}
}

// finished reports whether the wait is over: every status ended, or one
// failed.
func (w *waiter) finished() bool { return w.left.Load() <= 0 || w.failed.Load() != 0 }

// sleep waits until the wait is over or timeout passes (negative: no
// limit); it reports whether the wait is over.
func (w *waiter) sleep(timeout time.Duration) bool {
	if w.how == ParkGoroutine {
		return w.park(timeout)
	}
	deadline := time.Now().Add(timeout)
	for {
		w.word.Store(0)
		if w.finished() {
			return true
		}
		rest := time.Duration(-1)
		if timeout > 0 {
			if rest = time.Until(deadline); rest <= 0 {
				return w.finished()
			}
		}
		if d := driverOf(w.watched); d != nil {
			slice := driveSlice
			if rest >= 0 {
				slice = min(slice, rest)
			}
			if d.Drive(time.Now().Add(slice)) {
				continue
			}
		}
		w.asleep.Store(1)
		futexWait(&w.word, 0, rest)
		w.asleep.Store(0)
	}
}

func (w *waiter) park(timeout time.Duration) bool {
	var expired <-chan time.Time
	if timeout > 0 {
		t := time.NewTimer(timeout)
		defer t.Stop()
		expired = t.C
	}
	for !w.finished() {
		select {
		case <-w.ch:
		case <-expired:
			return w.finished()
		}
	}
	return true
}
