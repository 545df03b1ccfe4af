// Package procstat reads this process's resident memory and open file
// descriptors from /proc, for the soak command and the fault tests that
// check that nothing leaks.
package procstat

import (
	"os"
	"strconv"
	"strings"
)

// RSS returns VmRSS from /proc/self/status in bytes (0 where there is none).
func RSS() uint64 {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if rest, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			if f := strings.Fields(rest); len(f) > 0 {
				kb, _ := strconv.ParseUint(f[0], 10, 64)
				return kb << 10
			}
		}
	}
	return 0
}

// FDs returns the number of open file descriptors (-1 where /proc is absent).
func FDs() int {
	es, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		return -1
	}
	return len(es)
}
