package gpu

import (
	"runtime"
	"time"
)

// Waiting for a stream: the Driver records the stream's event after the
// work it queued and polls the event, rather than calling
// cuStreamSynchronize, which under the default scheduling (CU_CTX_SCHED_AUTO)
// spins an OS thread per waiting call for as long as the copy runs, inside
// the application's process. The poll yields the processor to other
// goroutines between queries for the first spinFor, which covers a staging
// slot (256 KiB: about 10 µs over PCIe 5) and most same-host batches, then
// sleeps, doubling from sleepMin to sleepMax. Go rounds short sleeps of an
// otherwise idle process up to about 1 ms, so a copy that outlasts spinFor
// may be noticed up to that much late: docs/hardware.md lists this among
// the first things to measure on a GPU.
const (
	spinFor  = 200 * time.Microsecond
	sleepMin = 20 * time.Microsecond
	sleepMax = 500 * time.Microsecond
)

// waitStream waits until the work queued so far on s has finished.
func (d *Driver) waitStream(s stream, device int) error {
	if err := d.b.recordDone(s, device); err != nil {
		return err
	}
	return pollDone(func() (bool, error) { return d.b.queryDone(s) })
}

// pollDone calls done until it reports true or fails.
func pollDone(done func() (bool, error)) error {
	var start time.Time
	sleep := sleepMin
	for {
		ok, err := done()
		if ok || err != nil {
			return err
		}
		switch {
		case start.IsZero():
			start = time.Now()
			runtime.Gosched()
		case time.Since(start) < spinFor:
			runtime.Gosched()
		default:
			time.Sleep(sleep)
			sleep = min(2*sleep, sleepMax)
		}
	}
}
