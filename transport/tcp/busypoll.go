package tcp

import (
	"time"

	"golang.org/x/sys/unix"
)

// Busy polling. On a machine whose other cores are idle, the kernel halts
// them, and waking a thread there costs tens of microseconds (on the VMs
// measured, a trip through the hypervisor per wake-up): the largest part
// of one small transfer. A thread waiting for its acknowledgement
// (drive.go) therefore polls the socket for it for a short while
// (Config.BusyPoll, default 50 µs) before it sleeps in poll(2): its core
// does not halt, and an acknowledgement that comes within that time wakes
// nobody. A core is held only by a thread that is waiting for a transfer
// anyway, for at most that long per wait, never while the engine is idle.
//
// The target does not poll for frames: tried, with both sides polling on
// two cores the pollers took the cores from the threads doing the work, and
// one 4 KiB write took twice as long as with the waiter polling alone.
// (UCX, under NIXL, polls in the same spirit: its progress thread spins
// while work is in flight.)

// defaultBusyPoll is Config.BusyPoll's default.
const defaultBusyPoll = 50 * time.Microsecond

// pollForResponse polls the socket for the stream's next response while
// the busy-poll time lasts and until is ahead; it returns the last fill's
// outcome (unix.EAGAIN: nothing came). The caller holds the read role.
func (s *stream) pollForResponse(until time.Time) error {
	end := time.Now().Add(s.p.b.cfg.BusyPoll)
	if until.Before(end) {
		end = until
	}
	err := error(unix.EAGAIN)
	for err == unix.EAGAIN && time.Now().Before(end) {
		err = s.fillNow()
	}
	return err
}
