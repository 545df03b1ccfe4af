package core

import (
	"errors"
	"fmt"
)

//go:generate go tool stringer -type=StatusCode -linecomment -output=statuscode_string.go

// StatusCode is the state of a transfer. The values up to ErrGPUOp match
// MORI-IO's StatusCode, so that callers written for MORI-IO read them alike.
// Every code above ErrBegin is a failure.
type StatusCode uint32

const (
	StatusSuccess    StatusCode = 0 // SUCCESS
	StatusInit       StatusCode = 1 // INIT
	StatusInProgress StatusCode = 2 // IN_PROGRESS

	ErrBegin       StatusCode = 10 // ERR_BEGIN
	ErrInvalidArgs StatusCode = 11 // ERR_INVALID_ARGS
	ErrNotFound    StatusCode = 12 // ERR_NOT_FOUND
	ErrRDMAOp      StatusCode = 13 // ERR_RDMA_OP
	ErrBadState    StatusCode = 14 // ERR_BAD_STATE
	ErrGPUOp       StatusCode = 15 // ERR_GPU_OP
	// ErrTimeout: the transfer did not finish within its timeout.
	ErrTimeout StatusCode = 16 // ERR_TIMEOUT
	// ErrConnection: the connection to the peer failed or was refused.
	ErrConnection StatusCode = 17 // ERR_CONNECTION
	// ErrRemote: the remote engine refused the request.
	ErrRemote StatusCode = 18 // ERR_REMOTE
	// ErrInternal: a bug in the engine (a recovered panic, for example).
	ErrInternal StatusCode = 19 // ERR_INTERNAL
)

// Failed reports whether c is a failure code.
func (c StatusCode) Failed() bool { return c > ErrBegin }

// Terminal reports whether c is final (success or failure).
func (c StatusCode) Terminal() bool { return c == StatusSuccess || c.Failed() }

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
