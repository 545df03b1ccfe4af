package core

import (
	"errors"
	"fmt"
)

// StatusCode is the state of a transfer. The values up to ErrGPUOp match
// MORI-IO's StatusCode, so that callers written for MORI-IO read them alike.
// Every code above ErrBegin is a failure.
type StatusCode uint32

const (
	StatusSuccess    StatusCode = 0
	StatusInit       StatusCode = 1
	StatusInProgress StatusCode = 2

	ErrBegin       StatusCode = 10
	ErrInvalidArgs StatusCode = 11
	ErrNotFound    StatusCode = 12
	ErrRDMAOp      StatusCode = 13
	ErrBadState    StatusCode = 14
	ErrGPUOp       StatusCode = 15
	// ErrTimeout: the transfer did not finish within its timeout.
	ErrTimeout StatusCode = 16
	// ErrConnection: the connection to the peer failed or was refused.
	ErrConnection StatusCode = 17
	// ErrRemote: the remote engine refused the request.
	ErrRemote StatusCode = 18
	// ErrInternal: a bug in the engine (a recovered panic, for example).
	ErrInternal StatusCode = 19
)

// Failed reports whether c is a failure code.
func (c StatusCode) Failed() bool { return c > ErrBegin }

// Terminal reports whether c is final (success or failure).
func (c StatusCode) Terminal() bool { return c == StatusSuccess || c.Failed() }

func (c StatusCode) String() string {
	switch c {
	case StatusSuccess:
		return "SUCCESS"
	case StatusInit:
		return "INIT"
	case StatusInProgress:
		return "IN_PROGRESS"
	case ErrInvalidArgs:
		return "ERR_INVALID_ARGS"
	case ErrNotFound:
		return "ERR_NOT_FOUND"
	case ErrRDMAOp:
		return "ERR_RDMA_OP"
	case ErrBadState:
		return "ERR_BAD_STATE"
	case ErrGPUOp:
		return "ERR_GPU_OP"
	case ErrTimeout:
		return "ERR_TIMEOUT"
	case ErrConnection:
		return "ERR_CONNECTION"
	case ErrRemote:
		return "ERR_REMOTE"
	case ErrInternal:
		return "ERR_INTERNAL"
	}
	return fmt.Sprintf("STATUS(%d)", uint32(c))
}

// ErrNotSupported is wrapped by errors that mean a feature is absent on
// this machine (no RDMA device, no GPU driver), as opposed to a request that
// is wrong. An engine in auto mode falls back to TCP only on these.
var ErrNotSupported = errors.New("not supported")

// Error is an error with a status code, so that it can cross the C ABI as a
// code plus a message.
type Error struct {
	Code StatusCode
	Msg  string
	Err  error
}

func (e *Error) Error() string {
	if e.Msg == "" && e.Err != nil {
		return e.Err.Error()
	}
	return e.Msg
}

func (e *Error) Unwrap() error { return e.Err }

// Errorf returns an *Error with the given code and formatted message. A %w
// verb wraps as fmt.Errorf does.
func Errorf(code StatusCode, format string, args ...any) error {
	err := fmt.Errorf(format, args...)
	return &Error{Code: code, Msg: err.Error(), Err: errors.Unwrap(err)}
}

// CodeOf returns the status code carried by err: the code of the outermost
// *Error in its chain, ErrInternal for other non-nil errors, StatusSuccess
// for nil.
func CodeOf(err error) StatusCode {
	if err == nil {
		return StatusSuccess
	}
	var e *Error
	if errors.As(err, &e) {
		return e.Code
	}
	return ErrInternal
}
