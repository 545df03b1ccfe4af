//go:build latencytrace

package lattrace

import (
	"sync/atomic"

	"golang.org/x/sys/unix"
)

// Enabled reports whether this build records marks.
const Enabled = true

const capacity = 1 << 16

type track struct {
	n  atomic.Int64
	at [capacity]int64
}

var tracks [NumSteps]track

// Mark records the monotonic clock, in nanoseconds, at step s (the first
// 65536 times per step; later marks are dropped).
func Mark(s Step) {
	var ts unix.Timespec
	unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts)
	t := &tracks[s]
	if i := t.n.Add(1) - 1; i < capacity {
		t.at[i] = ts.Nano()
	}
}

// Marks returns the times recorded at step s, in order, and forgets them.
// Call it while nothing marks s.
func Marks(s Step) []int64 {
	t := &tracks[s]
	n := min(t.n.Swap(0), capacity)
	return append([]int64(nil), t.at[:n]...)
}
