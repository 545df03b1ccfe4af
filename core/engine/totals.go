package engine

import (
	"sync/atomic"
	"time"

	"github.com/mori-go/mori-go/core"
)

// Totals counts what the transfers this engine started have moved since it
// was created: bytes of transfers that ended in success, by direction, and
// the number of transfers that succeeded and that failed after they were
// accepted (a request refused at Submit counts in neither).
type Totals struct {
	BytesWritten uint64 `json:"bytes_written"`
	BytesRead    uint64 `json:"bytes_read"`
	Succeeded    uint64 `json:"transfers_succeeded"`
	Failed       uint64 `json:"transfers_failed"`
	// TransferNanos sums, over the transfers that succeeded, the time from
	// Submit to the end of the transfer (divide by Succeeded for the mean).
	TransferNanos uint64 `json:"transfer_ns"`
}

type totalCounters struct {
	written, read, succeeded, failed, nanos atomic.Uint64
}

// TransferEnded counts one ended transfer (core.EndObserver).
func (c *totalCounters) TransferEnded(t *core.Transfer) {
	if t.EndCode() != core.StatusSuccess {
		c.failed.Add(1)
		return
	}
	c.nanos.Add(uint64(t.Elapsed()))
	c.succeeded.Add(1)
	if t.Op == core.OpRead {
		c.read.Add(t.Bytes)
	} else {
		c.written.Add(t.Bytes)
	}
}

// Totals returns what the engine's transfers have moved so far.
func (e *Engine) Totals() Totals {
	c := &e.totals
	return Totals{
		BytesWritten:  c.written.Load(),
		BytesRead:     c.read.Load(),
		Succeeded:     c.succeeded.Load(),
		Failed:        c.failed.Load(),
		TransferNanos: c.nanos.Load(),
	}
}

// logTotals logs Totals at info level every interval in which they changed,
// until stop is closed (Config.TotalsLogInterval).
func (e *Engine) logTotals(interval time.Duration, stop <-chan struct{}) {
	tick := time.NewTicker(interval)
	defer tick.Stop()
	var last Totals
	for {
		select {
		case <-stop:
			return
		case <-tick.C:
		}
		if t := e.Totals(); t != last {
			last = t
			e.log.Info("transfer totals", "bytes_written", t.BytesWritten, "bytes_read", t.BytesRead,
				"transfers_succeeded", t.Succeeded, "transfers_failed", t.Failed, "transfer_ns", t.TransferNanos)
		}
	}
}
