package sim

import "sync/atomic"

// Stats counts what happened on a fabric, for tests that assert behaviour
// the completions do not show.
type Stats struct {
	// RNRNaks counts the receiver-not-ready answers: a SEND (or a WRITE
	// with immediate) that found no receive posted and was retried after
	// the RNR timer, stalling its QP.
	RNRNaks int64
	// Receives counts the receives consumed by messages.
	Receives int64
}

type counters struct {
	rnrNaks  atomic.Int64
	receives atomic.Int64
}

// Stats returns the fabric's counters.
func (f *Fabric) Stats() Stats {
	return Stats{RNRNaks: f.count.rnrNaks.Load(), Receives: f.count.receives.Load()}
}
