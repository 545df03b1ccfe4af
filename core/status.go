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
	done chan struct{}
	// watchers are told when the status becomes terminal (see WaitAll).
	watchers []chan<- *Status
}

// NewStatus returns a status in state INIT.
func NewStatus() *Status {
	s := &Status{done: make(chan struct{})}
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
	defer s.mu.Unlock()
	if StatusCode(s.code.Load()).Terminal() {
		return false
	}
	s.msg = msg
	s.code.Store(uint32(code))
	close(s.done)
	for _, w := range s.watchers {
		select {
		case w <- s:
		default: // WaitAll sizes its channel so that this never happens
		}
	}
	s.watchers = nil
	lattrace.Mark(lattrace.StatusDone)
	return true
}

// watch arranges for s to be sent on ch once it is terminal. It reports
// false, and arranges nothing, when s is terminal already.
func (s *Status) watch(ch chan<- *Status) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.Code().Terminal() {
		return false
	}
	s.watchers = append(s.watchers, ch)
	return true
}

// unwatch undoes watch.
func (s *Status) unwatch(ch chan<- *Status) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.watchers = slices.DeleteFunc(s.watchers, func(w chan<- *Status) bool { return w == ch })
}

// Done returns a channel closed once the status is terminal.
func (s *Status) Done() <-chan struct{} { return s.done }

// Wait blocks until the status is terminal or timeout passes, and returns
// the code it then has. A negative timeout waits for ever; zero polls once.
func (s *Status) Wait(timeout time.Duration) StatusCode {
	if c := s.Code(); c.Terminal() || timeout == 0 {
		return c
	}
	if timeout < 0 {
		<-s.done
		return s.Code()
	}
	t := time.NewTimer(timeout)
	defer t.Stop()
	select {
	case <-s.done:
	case <-t.C:
	}
	return s.Code()
}

// WaitAll waits until every status is terminal or timeout passes. Failure
// wins: as soon as any status has failed, its code is returned even if
// others are still running. Otherwise it returns SUCCESS when all have
// succeeded and IN_PROGRESS when the time ran out first. A negative timeout
// waits for ever; zero polls once.
func WaitAll(statuses []*Status, timeout time.Duration) StatusCode {
	done := true
	for _, s := range statuses {
		c := s.Code()
		if c.Failed() {
			return c
		}
		done = done && c == StatusSuccess
	}
	if done {
		return StatusSuccess
	}
	if timeout == 0 {
		return StatusInProgress
	}
	// Wait for any status to end, not only the first one pending: a status
	// that fails while an earlier one is still running ends the wait.
	ch := make(chan *Status, len(statuses))
	var watched []*Status
	defer func() {
		for _, s := range watched {
			s.unwatch(ch)
		}
	}()
	for _, s := range statuses {
		if s.watch(ch) {
			watched = append(watched, s)
		} else if c := s.Code(); c.Failed() {
			return c
		}
	}
	var expired <-chan time.Time
	if timeout > 0 {
		t := time.NewTimer(timeout)
		defer t.Stop()
		expired = t.C
	}
	for pending := len(watched); pending > 0; pending-- {
		select {
		case s := <-ch:
			if c := s.Code(); c.Failed() {
				return c
			}
		case <-expired:
			for _, s := range statuses {
				if c := s.Code(); c.Failed() {
					return c
				}
			}
			return StatusInProgress
		}
	}
	return StatusSuccess
}
