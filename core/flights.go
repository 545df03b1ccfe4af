package core

import (
	"sync"
	"time"
)

// Flights is an engine's table of transfers in flight. It refuses a second
// transfer under a (peer, uid) already in flight, and ends every transfer
// that outlives the timeout with ErrTimeout.
//
// All transfers share one timeout, so their deadlines come in the order
// they are added: the table keeps them in a list, oldest first, and one
// timer, armed for the oldest deadline, serves them all. Adding and ending
// a transfer costs a map entry and two list links under one mutex: no
// timer, goroutine or closure per transfer. The timer is re-armed only when
// it fires (at most once per timeout while transfers flow), and not at all
// while the table stays empty.
type Flights struct {
	timeout time.Duration
	timer   *time.Timer

	mu         sync.Mutex
	byKey      map[flightKey]*Transfer
	head, tail *Transfer // in deadline order
	armed      bool      // the timer will fire; false only while the list is empty
}

type flightKey struct {
	peer string
	uid  uint64
}

// flightLinks are a transfer's place in its engine's Flights.
type flightLinks struct {
	flights    *Flights
	deadline   time.Time
	prev, next *Transfer
	listed     bool
}

// NewFlights returns an empty table whose transfers time out after timeout.
func NewFlights(timeout time.Duration) *Flights {
	f := &Flights{timeout: timeout, byKey: make(map[flightKey]*Transfer)}
	f.timer = time.AfterFunc(time.Hour, f.expire)
	f.timer.Stop()
	return f
}

// Timeout is how long a transfer may run.
func (f *Flights) Timeout() time.Duration { return f.timeout }

// Add records t as in flight, its deadline the timeout from now. It fails
// when a transfer with the same peer and uid is still in flight. Once
// added, t leaves the table when it ends, whatever ends it.
func (f *Flights) Add(t *Transfer) error {
	key := flightKey{t.Peer, t.UID}
	now := time.Now()
	f.mu.Lock()
	defer f.mu.Unlock()
	if _, dup := f.byKey[key]; dup {
		return Errorf(ErrInvalidArgs, "transfer uid %d to %q is already in flight", t.UID, t.Peer)
	}
	f.byKey[key] = t
	t.flight = flightLinks{flights: f, deadline: now.Add(f.timeout), prev: f.tail, listed: true}
	if f.tail != nil {
		f.tail.flight.next = t
	} else {
		f.head = t
	}
	f.tail = t
	if !f.armed {
		f.armed = true
		f.timer.Reset(f.timeout)
	}
	return nil
}

// Len returns the number of transfers in flight.
func (f *Flights) Len() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.byKey)
}

// remove takes t out of the table (Transfer.finish calls it).
func (f *Flights) remove(t *Transfer) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.unlinkLocked(t)
	key := flightKey{t.Peer, t.UID}
	if f.byKey[key] == t {
		delete(f.byKey, key)
	}
}

func (f *Flights) unlinkLocked(t *Transfer) {
	l := &t.flight
	if !l.listed {
		return
	}
	if l.prev != nil {
		l.prev.flight.next = l.next
	} else {
		f.head = l.next
	}
	if l.next != nil {
		l.next.flight.prev = l.prev
	} else {
		f.tail = l.prev
	}
	l.prev, l.next, l.listed = nil, nil, false
}

// expire runs when the timer fires: it ends the transfers past their
// deadline and arms the timer for the next one.
func (f *Flights) expire() {
	now := time.Now()
	var late []*Transfer
	f.mu.Lock()
	for f.head != nil && !now.Before(f.head.flight.deadline) {
		t := f.head
		f.unlinkLocked(t)
		late = append(late, t)
	}
	if f.head != nil {
		f.timer.Reset(f.head.flight.deadline.Sub(now))
	} else {
		f.armed = false
	}
	f.mu.Unlock()
	for _, t := range late {
		t.Fail(ErrTimeout, "timed out after %s", f.timeout)
	}
}
