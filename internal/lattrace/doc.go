// Package lattrace marks the steps of one small transfer with timestamps,
// for the latency breakdown of docs/benchmarks.md. In a normal build Mark
// is an empty function the compiler removes; built with the tag
// latencytrace (go test -tags latencytrace ./stack -run Breakdown), it
// records the monotonic clock (comparable between processes of one host)
// each time a step is reached, so that a benchmark running one transfer at
// a time reads where the microseconds go: the i-th mark of every step
// belongs to the i-th transfer.
package lattrace

// Step is one point on the path of a transfer.
type Step int

// The steps of one write, in the order they happen.
const (
	Submit      Step = iota // the application calls Engine.Submit
	Checked                 // the engine has checked the request and armed its deadline
	FrameOut                // the initiator has written the frame to the socket
	TargetWake              // the target's stream goroutine sees the frame
	TargetCheck             // the target has checked it against its registrations
	TargetLand              // the payload is in the target's memory
	AckOut                  // the target has written the acknowledgement
	InitWake                // the initiator's stream reader has the acknowledgement
	StatusDone              // the transfer's status is terminal
	WaiterBack              // the waiting application goroutine is running again
	NumSteps
)

var names = [NumSteps]string{
	"submit", "checked", "frame out", "target wake-up", "target check", "target write", "ack out",
	"initiator wake-up", "status", "waiter wake-up",
}

// String names the step.
func (s Step) String() string {
	if s < 0 || s >= NumSteps {
		return "step?"
	}
	return names[s]
}
