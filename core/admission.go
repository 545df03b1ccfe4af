package core

import (
	"errors"
	"sync"
	"sync/atomic"
)

// DefaultGreetedCapacity bounds how many engines that greeted this one
// (Admission.Greeted) are remembered.
const DefaultGreetedCapacity = 4096

// ErrNotAdmitted is wrapped by the refusal of a data stream from an engine
// that has not completed the control-plane handshake with this one.
var ErrNotAdmitted = errors.New("not admitted")

// Admission says which engines' data streams an engine serves: those it
// registered itself (RegisterRemoteEngine) and those that completed the
// control-plane hello with it, the latter remembered up to a bound (oldest
// forgotten first), so that a flood of hellos costs a bounded amount of
// memory. It also counts what the data planes refuse.
//
// Admission is not authentication: without a shared secret or TLS, anyone
// who reaches the control port can say hello under any name. It narrows
// the data port to engines that went through the control plane; memory
// tokens (Registry.Resolve) are what keep a stranger out of the memory.
type Admission struct {
	mu         sync.Mutex
	registered map[string]struct{}
	greeted    map[string]struct{}
	order      []string // greeted keys, oldest first
	capacity   int

	refused atomic.Uint64 // streams refused (not admitted, over a limit)
}

// NewAdmission returns an empty list remembering up to capacity greeted
// engines (DefaultGreetedCapacity when capacity <= 0).
func NewAdmission(capacity int) *Admission {
	if capacity <= 0 {
		capacity = DefaultGreetedCapacity
	}
	return &Admission{registered: make(map[string]struct{}), greeted: make(map[string]struct{}), capacity: capacity}
}

// Register admits an engine this engine registered.
func (a *Admission) Register(key string) {
	a.mu.Lock()
	a.registered[key] = struct{}{}
	a.mu.Unlock()
}

// Unregister forgets an engine this engine deregistered; if it greeted
// this engine it stays admitted until it is forgotten from that list.
func (a *Admission) Unregister(key string) {
	a.mu.Lock()
	delete(a.registered, key)
	a.mu.Unlock()
}

// Greeted admits an engine that completed the control-plane hello.
func (a *Admission) Greeted(key string) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if _, ok := a.greeted[key]; ok {
		return
	}
	if len(a.order) >= a.capacity {
		delete(a.greeted, a.order[0])
		a.order = a.order[1:]
	}
	a.greeted[key] = struct{}{}
	a.order = append(a.order, key)
}

// Check returns nil if engine key is admitted, and otherwise counts the
// refusal and returns an error wrapping ErrNotAdmitted.
func (a *Admission) Check(key string) error {
	a.mu.Lock()
	_, reg := a.registered[key]
	_, gr := a.greeted[key]
	a.mu.Unlock()
	if reg || gr {
		return nil
	}
	a.refused.Add(1)
	return Errorf(ErrNotFound, "engine %q is %w: register it, or have it register this engine, first", key, ErrNotAdmitted)
}

// CountRefusal counts a stream refused for another reason (a limit).
func (a *Admission) CountRefusal() { a.refused.Add(1) }

// Refused returns the number of data streams refused.
func (a *Admission) Refused() uint64 { return a.refused.Load() }
