package gpu

import (
	"errors"
	"fmt"
	"sync"

	"github.com/mori-go/mori-go/core"
)

// ErrNotSupported means that there is no usable GPU driver in this process
// (no library, no device), or that the driver lacks a feature. It wraps
// core.ErrNotSupported, the project's one "not supported": errors.Is holds
// for both on every such error of this package.
var ErrNotSupported = fmt.Errorf("gpu: %w", core.ErrNotSupported)

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
// driver's "not supported" code.
func (e *driverError) Is(target error) bool {
	return (target == ErrNotSupported || target == core.ErrNotSupported) && (e.code < 0 || e.code == codeNotSupported)
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
