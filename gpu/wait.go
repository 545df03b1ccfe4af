package gpu

import (
	"runtime"
	"time"
)

// Waiting for a stream: the Driver records the stream's event after the
// work it queued and polls the event, rather than calling
// cuStreamSynchronize, which under the default scheduling (CU_CTX_SCHED_AUTO)
// spins a CPU core for as long as the copy runs, inside the application's
// process. The poll yields the processor between queries for the first
// spinFor (short copies: a staging slot of 256 KiB takes about 10 µs over
// PCIe 5), then sleeps, doubling from sleepMin to sleepMax.
const (
	spinFor  = 50 * time.Microsecond
	sleepMin = 20 * time.Microsecond
	sleepMax = time.Millisecond
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
