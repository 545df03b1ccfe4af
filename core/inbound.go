package core

import (
	"sync"
)

// InboundKey names one inbound transfer: the initiator's engine key and the
// uid it chose.
type InboundKey struct {
	Peer string
	UID  uint64
}

// InboundStatus is what the target knows of one inbound transfer.
type InboundStatus struct {
	Code    StatusCode
	Message string
}

type inboundEntry struct {
	seq      uint64 // insertion number, to match the entry's slot in order
	instance uint64 // the initiator's id for this run of the uid
	total    uint32 // parts expected
	admitted uint32
	got      uint32
	code     StatusCode
	msg      string
}

// InboundTable records, on the target, the progress of transfers that
// peers make into (or out of) its memory, so that the application can ask
// whether the transfer with a given (peer, uid) has completed. Unlike
// MORI-IO's, entries are freed when popped and the table is bounded: past
// its capacity the oldest entries are dropped.
type InboundTable struct {
	mu      sync.Mutex
	cap     int
	entries map[InboundKey]*inboundEntry
	order   []orderSlot // insertion order, for eviction; may hold stale slots
	head    int
	seq     uint64
	dropped uint64
}

// orderSlot is an entry's place in the eviction order. A slot whose entry
// was popped or replaced since is stale: its seq no longer matches.
type orderSlot struct {
	key InboundKey
	seq uint64
}

// DefaultInboundCapacity is the number of entries kept when none is given.
const DefaultInboundCapacity = 1 << 16

// NewInboundTable returns a table holding at most capacity entries.
func NewInboundTable(capacity int) *InboundTable {
	if capacity <= 0 {
		capacity = DefaultInboundCapacity
	}
	return &InboundTable{cap: capacity, entries: make(map[InboundKey]*inboundEntry)}
}

// Admit records that a part of the transfer (key, instance) of total parts
// is about to be served, before its memory is touched. It refuses a part of
// another instance while an earlier run of the same uid is in progress (a
// duplicate uid), a part count that disagrees with earlier parts, and parts
// past the declared count.
func (t *InboundTable) Admit(key InboundKey, instance uint64, total uint32) error {
	t.mu.Lock()
	defer t.mu.Unlock()
	e := t.entries[key]
	if e != nil && e.instance != instance {
		if e.code == StatusInProgress {
			return Errorf(ErrInvalidArgs, "duplicate transfer uid %d from %q: an earlier transfer with this uid is still in progress", key.UID, key.Peer)
		}
		// A finished, unpopped run of the uid: the new run replaces it.
		delete(t.entries, key)
		e = nil
	}
	if e == nil {
		if total == 0 {
			return Errorf(ErrInvalidArgs, "transfer uid %d from %q declares zero parts", key.UID, key.Peer)
		}
		e = &inboundEntry{instance: instance, total: total, code: StatusInProgress}
		t.insert(key, e)
	}
	if total != e.total {
		return Errorf(ErrInvalidArgs, "transfer uid %d from %q: part declares %d parts, earlier parts declared %d", key.UID, key.Peer, total, e.total)
	}
	if e.admitted >= e.total {
		return Errorf(ErrInvalidArgs, "transfer uid %d from %q: more than the %d parts declared", key.UID, key.Peer, e.total)
	}
	e.admitted++
	return nil
}

// Complete records the outcome of a part admitted earlier: success when err
// is nil. The transfer succeeds when all its parts have, and fails with the
// first part that fails. A part whose entry was popped or evicted
// meanwhile is ignored.
func (t *InboundTable) Complete(key InboundKey, instance uint64, err error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	e := t.entries[key]
	if e == nil || e.instance != instance {
		return
	}
	e.got++
	if err != nil && !e.code.Failed() {
		e.code = CodeOf(err)
		if e.code == ErrInternal {
			e.code = ErrInvalidArgs
		}
		e.msg = err.Error()
	}
	if e.got >= e.total && e.code == StatusInProgress {
		e.code = StatusSuccess
	}
}

// Refuse records a part that was refused before it was admitted (a bad
// request), so that the target's status for the uid says why.
func (t *InboundTable) Refuse(key InboundKey, instance uint64, total uint32, err error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	e := t.entries[key]
	if e != nil && e.instance != instance {
		if e.code == StatusInProgress {
			// A part of a duplicate run: the run in progress keeps its entry.
			return
		}
		// A finished, unpopped run of the uid: the new run replaces it, as
		// in Admit, so that the status says why the new run failed.
		delete(t.entries, key)
		e = nil
	}
	if e == nil {
		if total == 0 {
			total = 1
		}
		e = &inboundEntry{instance: instance, total: total, code: StatusInProgress}
		t.insert(key, e)
	}
	if !e.code.Failed() {
		e.code = CodeOf(err)
		if e.code == ErrInternal {
			e.code = ErrInvalidArgs
		}
		e.msg = err.Error()
	}
}

func (t *InboundTable) insert(key InboundKey, e *inboundEntry) {
	for len(t.entries) >= t.cap {
		// Every live entry has its slot at or past head, so this stays in
		// bounds while entries is not empty.
		sl := t.order[t.head]
		t.order[t.head] = orderSlot{}
		t.head++
		if o, ok := t.entries[sl.key]; ok && o.seq == sl.seq {
			delete(t.entries, sl.key)
			t.dropped++
		}
	}
	// Drop stale slots (entries popped, replaced or evicted) once they are
	// the majority, so that order stays bounded by the table, not by the
	// number of transfers ever seen.
	if len(t.order) > 2*len(t.entries)+1024 {
		live := t.order[:0]
		for _, sl := range t.order[t.head:] {
			if o, ok := t.entries[sl.key]; ok && o.seq == sl.seq {
				live = append(live, sl)
			}
		}
		clear(t.order[len(live):])
		t.order = live
		t.head = 0
	}
	t.seq++
	e.seq = t.seq
	t.entries[key] = e
	t.order = append(t.order, orderSlot{key: key, seq: e.seq})
}

// Pop returns the status of (peer, uid). A terminal entry is removed; an
// entry in progress stays. ok is false when nothing is known of it.
func (t *InboundTable) Pop(key InboundKey) (st InboundStatus, ok bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	e := t.entries[key]
	if e == nil {
		return InboundStatus{}, false
	}
	if e.code.Terminal() {
		delete(t.entries, key)
	}
	return InboundStatus{Code: e.code, Message: e.msg}, true
}

// FailPeer marks every unfinished entry of peer as failed with msg.
func (t *InboundTable) FailPeer(peer, msg string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	for k, e := range t.entries {
		if k.Peer == peer && !e.code.Terminal() {
			e.code = ErrConnection
			e.msg = msg
		}
	}
}

// Len returns the number of entries held; Dropped the number evicted.
func (t *InboundTable) Len() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return len(t.entries)
}

// Dropped returns how many entries were evicted for lack of room.
func (t *InboundTable) Dropped() uint64 {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.dropped
}
