// Package procmaps tells whether a range of addresses is host memory that
// this process can read and write, from the kernel's list of the process's
// mappings (/proc/self/maps). The engine uses it to accept memory
// registered as GPU memory when no GPU driver is loaded: only a range that
// is provably ordinary host memory may then be treated as such, because a
// device address read by the CPU crashes the process.
package procmaps

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
)

// mapsFile is the kernel's list of this process's mappings.
const mapsFile = "/proc/self/maps"

// CheckReadWrite returns nil when every byte of [ptr, ptr+size) lies in
// mappings of this process that are readable and writable, and otherwise
// an error that says which address is not ("0x7f00001000 is not mapped",
// "0x7f00001000 is mapped ---p"). Device memory reserved by a GPU driver
// in the address space (CUDA's unified addressing) is mapped without
// access, so it is refused.
func CheckReadWrite(ptr uintptr, size uint64) error {
	if size == 0 {
		return fmt.Errorf("host range %#x+0: empty range", ptr)
	}
	if uint64(ptr)+size < uint64(ptr) {
		return fmt.Errorf("host range %#x+%d: wraps around the address space", ptr, size)
	}
	f, err := os.Open(mapsFile)
	if err != nil {
		return fmt.Errorf("host range %#x+%d: cannot read the process's mappings: %w", ptr, size, err)
	}
	defer f.Close()
	return checkMaps(f, uint64(ptr), uint64(ptr)+size)
}

// checkMaps checks [start, end) against a /proc/PID/maps listing, whose
// lines are sorted by address and do not overlap.
func checkMaps(r io.Reader, start, end uint64) error {
	at := start // the first byte not yet found in a mapping
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 4096), 1<<20)
	for sc.Scan() {
		lo, hi, perms, err := parseLine(sc.Text())
		if err != nil {
			return fmt.Errorf("host range %#x+%d: %s: %w", start, end-start, mapsFile, err)
		}
		if hi <= at {
			continue
		}
		if lo > at {
			break // a hole at at
		}
		if len(perms) < 2 || perms[0] != 'r' || perms[1] != 'w' {
			return fmt.Errorf("host range %#x+%d: %#x is mapped %s, not readable and writable", start, end-start, at, perms)
		}
		at = hi
		if at >= end {
			return nil
		}
	}
	if err := sc.Err(); err != nil {
		return fmt.Errorf("host range %#x+%d: reading %s: %w", start, end-start, mapsFile, err)
	}
	return fmt.Errorf("host range %#x+%d: %#x is not mapped in this process", start, end-start, at)
}

// parseLine reads the address range and permissions of one maps line:
// "7f0000000000-7f0000021000 rw-p 00000000 00:00 0   [heap]".
func parseLine(line string) (lo, hi uint64, perms string, err error) {
	fields := strings.Fields(line)
	if len(fields) < 2 {
		return 0, 0, "", fmt.Errorf("malformed line %q", line)
	}
	a, b, ok := strings.Cut(fields[0], "-")
	if !ok {
		return 0, 0, "", fmt.Errorf("malformed range in %q", line)
	}
	if lo, err = strconv.ParseUint(a, 16, 64); err == nil {
		hi, err = strconv.ParseUint(b, 16, 64)
	}
	if err != nil || hi < lo {
		return 0, 0, "", fmt.Errorf("malformed range in %q", line)
	}
	return lo, hi, fields[1], nil
}
