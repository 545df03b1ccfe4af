//go:build !latencytrace

package lattrace

// Enabled reports whether this build records marks.
const Enabled = false

// Mark records when step s happens (nothing in this build).
func Mark(Step) {}

// Marks returns the times recorded at step s (none in this build).
func Marks(Step) []int64 { return nil }
