package gpu

import (
	"errors"
	"fmt"
	"sync"
	"sync/atomic"

	"github.com/mori-go/mori-go/core"
)

// ErrNotSupported means that there is no usable GPU driver in this process
// (no library, no device), or that the driver lacks a feature. It wraps
// core.ErrNotSupported, the project's one "not supported": errors.Is holds
// for both on every such error of this package.
var ErrNotSupported = fmt.Errorf("gpu: %w", core.ErrNotSupported)

// ErrDeviceLost is wrapped by a driver error that corrupts the device
// context for good (CUDA's and HIP's "sticky" errors: 700 illegal address,
// 719 launch failure, ...) and by every error of the Driver after one: the
// GPU path is then unusable until the process restarts, and the Driver
// says so at once rather than calling the driver again.
var ErrDeviceLost = errors.New("gpu: device context lost to a sticky error (restart the process to use the GPU again)")

// errClosed is returned by calls on a closed Driver.
var errClosed = errors.New("gpu: driver is closed")

// driverError is a failed driver call.
type driverError struct {
	op   string
	code int // CUresult or hipError_t; -1 when the symbol is missing
	msg  string
}

// codeNotSupported is CUDA_ERROR_NOT_SUPPORTED and hipErrorNotSupported.
const codeNotSupported = 801

func (e *driverError) Error() string {
	if e.code < 0 {
		return fmt.Sprintf("gpu: %s: %s", e.op, e.msg)
	}
	return fmt.Sprintf("gpu: %s: %s (error %d)", e.op, e.msg, e.code)
}

// Is makes errors.Is(err, ErrNotSupported) true for a missing symbol or a
// driver's "not supported" code, and errors.Is(err, ErrDeviceLost) for a
// sticky error.
func (e *driverError) Is(target error) bool {
	switch target {
	case ErrNotSupported, core.ErrNotSupported:
		return e.code < 0 || e.code == codeNotSupported
	case ErrDeviceLost:
		return isSticky(e.code)
	}
	return false
}

// isSticky reports whether a CUresult or hipError_t leaves the context
// unusable: 700 illegal address, 702 launch timeout, 714-719 (hardware
// stack error, illegal instruction, misaligned address, invalid address
// space, invalid PC, launch failure). HIP uses the same numbers.
func isSticky(code int) bool {
	return code == 700 || code == 702 || (code >= 714 && code <= 719)
}

// stickyState remembers a backend's first sticky error.
type stickyState struct {
	first atomic.Pointer[driverError]
}

// note records e if it is sticky, and returns it.
func (s *stickyState) note(e *driverError) error {
	if isSticky(e.code) && s.first.CompareAndSwap(nil, e) {
		return fmt.Errorf("%w: %w", ErrDeviceLost, e)
	}
	return e
}

// check fails once a sticky error has happened.
func (s *stickyState) check() error {
	if e := s.first.Load(); e != nil {
		return fmt.Errorf("%w; first error: %v", ErrDeviceLost, e)
	}
	return nil
}

func missingSymbol(op string) error {
	return &driverError{op: op, code: -1, msg: "the driver does not have this function"}
}

func errNoDevice(device, n int) error {
	return fmt.Errorf("gpu: no device %d (%d devices)", device, n)
}

// onceErr returns a function that runs f the first time and reports an
// error on later calls.
func onceErr(f func() error) func() error {
	var mu sync.Mutex
	done := false
	return func() error {
		mu.Lock()
		defer mu.Unlock()
		if done {
			return errors.New("gpu: already released")
		}
		done = true
		return f()
	}
}
