package core

import "time"

// Driver lets a thread that waits for transfers make their progress itself,
// rather than sleep until another thread wakes it: a TCP stream whose
// responses the waiting thread reads from the socket (transport/tcp). Each
// thread handing work to the next costs a wake-up, tens of microseconds on
// an idle machine, where one small transfer takes few of them.
type Driver interface {
	// Drive reads and ends what has arrived for the transfers, waiting in
	// the kernel for something to arrive at most until until. It reports
	// false at once, doing nothing, when it cannot drive now (another
	// thread is reading): the caller then sleeps until woken.
	Drive(until time.Time) bool
}

// noDriver marks a status whose transfer is spread over more than one
// driver: its waiter sleeps.
var noDriver Driver

// SetDriver records that d can drive the status's transfer; a transfer
// given two drivers has none. d is a pointer so that a status stores it
// without allocating.
func (s *Status) SetDriver(d *Driver) {
	if s.drv.CompareAndSwap(nil, d) {
		return
	}
	if old := s.drv.Load(); old != d {
		s.drv.Store(&noDriver)
	}
}

// maxDrivenStatuses bounds the statuses a waiting thread looks through for
// one driver of them all: larger batches wait as before.
const maxDrivenStatuses = 64

// driverOf returns the one driver of every status in statuses still
// running, or nil when there is none or more than one.
func driverOf(statuses []*Status) Driver {
	if len(statuses) > maxDrivenStatuses {
		return nil
	}
	var d *Driver
	for _, s := range statuses {
		if s.Code().Terminal() {
			continue
		}
		p := s.drv.Load()
		if p == nil || *p == nil || (d != nil && p != d) {
			return nil
		}
		d = p
	}
	if d == nil {
		return nil
	}
	return *d
}

// driveSlice is the longest a driving thread waits in the kernel before it
// looks at its statuses again: a transfer that times out or fails on
// another thread wakes the waiter's futex, not the socket it polls.
const driveSlice = 2 * time.Millisecond
