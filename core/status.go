package core

import (
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/mori-go/mori-go/internal/lattrace"
)

// Status is the state of one transfer as its initiator sees it: INIT, then
// IN_PROGRESS, then SUCCESS or a failure code with a message. The first
// terminal state sticks: a later success or failure is ignored, so the
// failure that ends a transfer is the one reported ("failure wins" because
// a transfer fails as soon as any of its parts fails).
type Status struct {
	code atomic.Uint32
	mu   sync.Mutex
	msg  string
	done chan struct{} // made by the first call of Done
	// watchers are told when the status becomes terminal (see WaitAll).
	watchers []*waiter
	// drv can drive the transfer on a waiting thread (SetDriver).
	drv atomic.Pointer[Driver]
}

// NewStatus returns a status in state INIT.
func NewStatus() *Status {
	s := &Status{}
	s.code.Store(uint32(StatusInit))
	return s
}

// Code returns the current state.
func (s *Status) Code() StatusCode { return StatusCode(s.code.Load()) }

// Message returns the failure message, or "" while none is recorded.
func (s *Status) Message() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.msg
}

// Start moves INIT to IN_PROGRESS; other states are left alone.
func (s *Status) Start() { s.code.CompareAndSwap(uint32(StatusInit), uint32(StatusInProgress)) }

// Finish records a terminal code and message. It reports whether this call
// decided the outcome (false when an earlier call already had).
func (s *Status) Finish(code StatusCode, msg string) bool {
	if !code.Terminal() {
		code = ErrInternal
	}
	s.mu.Lock()
	if StatusCode(s.code.Load()).Terminal() {
		s.mu.Unlock()
		return false
	}
	s.msg = msg
	s.code.Store(uint32(code))
	if s.done != nil {
		close(s.done)
	}
	watchers := s.watchers
	s.watchers = nil
	s.mu.Unlock()
	lattrace.Mark(lattrace.StatusDone)
	for _, w := range watchers {
		w.ended(code)
	}
	return true
}

// watch arranges for w to be told once s is terminal. It reports false,
// and arranges nothing, when s is terminal already.
func (s *Status) watch(w *waiter) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.Code().Terminal() {
		return false
	}
	s.watchers = append(s.watchers, w)
	return true
}

// unwatch undoes watch.
func (s *Status) unwatch(w *waiter) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.watchers = slices.DeleteFunc(s.watchers, func(x *waiter) bool { return x == w })
}

// Done returns a channel closed once the status is terminal.
func (s *Status) Done() <-chan struct{} {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.done == nil {
		s.done = make(chan struct{})
		if s.Code().Terminal() {
			close(s.done)
		}
	}
	return s.done
}

// Wait blocks until the status is terminal or timeout passes, and returns
// the code it then has. A negative timeout waits for ever; zero polls once.
// The calling goroutine parks; see WaitThread.
func (s *Status) Wait(timeout time.Duration) StatusCode {
	return waitAll([]*Status{s}, timeout, ParkGoroutine)
}

// WaitThread is Wait for a caller that owns its OS thread (the C ABI):
// see BlockThread.
func (s *Status) WaitThread(timeout time.Duration) StatusCode {
	return waitAll([]*Status{s}, timeout, BlockThread)
}

// WaitAll waits until every status is terminal or timeout passes. Failure
// wins: as soon as any status has failed, its code is returned even if
// others are still running. Otherwise it returns SUCCESS when all have
// succeeded and IN_PROGRESS when the time ran out first. A negative timeout
// waits for ever; zero polls once. The calling goroutine parks; see
// WaitAllThread.
func WaitAll(statuses []*Status, timeout time.Duration) StatusCode {
	return waitAll(statuses, timeout, ParkGoroutine)
}

// WaitAllThread is WaitAll for a caller that owns its OS thread (the C
// ABI): see BlockThread.
func WaitAllThread(statuses []*Status, timeout time.Duration) StatusCode {
	return waitAll(statuses, timeout, BlockThread)
}

func waitAll(statuses []*Status, timeout time.Duration, how WaitMode) StatusCode {
	if c, done := scan(statuses); done || timeout == 0 {
		return c
	}
	// Wait for any status to end, not only the first one pending: a status
	// that fails while an earlier one is still running ends the wait.
	w := newWaiter(how)
	var watched []*Status
	defer func() {
		for _, s := range watched {
			s.unwatch(w)
		}
		w.release()
	}()
	for _, s := range statuses {
		if s.watch(w) {
			watched = append(watched, s)
			w.left.Add(1)
		} else if c := s.Code(); c.Failed() {
			return c
		}
	}
	w.watched = watched
	if !w.sleep(timeout) {
		c, _ := scan(statuses)
		return c
	}
	if c := StatusCode(w.failed.Load()); c != 0 {
		return c
	}
	return StatusSuccess
}

// scan reports the outcome of statuses as they are now: a failure code
// (done), SUCCESS (done), or IN_PROGRESS (not done).
func scan(statuses []*Status) (StatusCode, bool) {
	done := true
	for _, s := range statuses {
		c := s.Code()
		if c.Failed() {
			return c, true
		}
		done = done && c == StatusSuccess
	}
	if done {
		return StatusSuccess, true
	}
	return StatusInProgress, false
}

// WaitEvery is MORI-IO's WaitAll: it waits until every status is terminal
// or timeout passes, and then returns the first failure in the order
// given, SUCCESS when all succeeded, or, when the time ran out with no
// failure, IN_PROGRESS. Nil statuses are skipped. A negative timeout waits
// for ever; zero polls once. (WaitAll returns at the first failure.) The
// calling goroutine parks; see WaitEveryThread.
func WaitEvery(statuses []*Status, timeout time.Duration) StatusCode {
	return waitEvery(statuses, timeout, ParkGoroutine)
}

// WaitEveryThread is WaitEvery for a caller that owns its OS thread (the
// C ABI): see BlockThread.
func WaitEveryThread(statuses []*Status, timeout time.Duration) StatusCode {
	return waitEvery(statuses, timeout, BlockThread)
}

func waitEvery(statuses []*Status, timeout time.Duration, how WaitMode) StatusCode {
	deadline := time.Now().Add(timeout)
	running := false
	for _, s := range statuses {
		if s == nil || s.Code().Terminal() {
			continue
		}
		left := timeout
		if timeout > 0 {
			if left = time.Until(deadline); left <= 0 {
				running = true
				break
			}
		}
		if !waitAll([]*Status{s}, left, how).Terminal() {
			running = true
			break
		}
	}
	for _, s := range statuses {
		if s != nil && s.Code().Failed() {
			return s.Code()
		}
	}
	if running {
		return StatusInProgress
	}
	return StatusSuccess
}
