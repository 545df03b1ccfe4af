package engine

import (
	"github.com/mori-go/mori-go/core"
)

// regArgs are the arguments of a registration, by which a registration
// whose descriptor did not fit the caller's buffer is found again.
type regArgs struct {
	ptr    uintptr
	size   uint64
	device int
	loc    core.MemoryLocation
}

// RegisterMemoryEncoded registers memory as RegisterMemory does and
// returns its encoded descriptor, for a caller that has room for capacity
// bytes. It registers exactly once: when the descriptor is longer than
// capacity it returns the descriptor (so that the caller learns its
// length) with an ErrInvalidArgs error and keeps the registration; the
// next call with the same arguments returns that registration's
// descriptor instead of registering again.
func (e *Engine) RegisterMemoryEncoded(ptr uintptr, size uint64, device int, loc core.MemoryLocation, capacity int) ([]byte, error) {
	args := regArgs{ptr: ptr, size: size, device: device, loc: loc}
	e.keptMu.Lock()
	b, kept := e.kept[args]
	e.keptMu.Unlock()
	if !kept {
		d, err := e.RegisterMemory(ptr, size, device, loc)
		if err != nil {
			return nil, err
		}
		if b, err = d.MarshalBinary(); err != nil {
			e.DeregisterMemory(d)
			return nil, err
		}
	}
	if len(b) > capacity {
		e.keptMu.Lock()
		e.kept[args] = b
		e.keptMu.Unlock()
		return b, core.Errorf(core.ErrInvalidArgs, "output buffer of %d bytes is too small for the memory descriptor: %d needed "+
			"(the memory is registered: call again with the same arguments and a buffer of that size to get its descriptor)", capacity, len(b))
	}
	if kept {
		e.keptMu.Lock()
		delete(e.kept, args)
		e.keptMu.Unlock()
	}
	return b, nil
}

// forgetKept drops a kept descriptor of memory id (deregistered).
func (e *Engine) forgetKept(id uint32) {
	e.keptMu.Lock()
	defer e.keptMu.Unlock()
	for args, b := range e.kept {
		var d core.MemoryDesc
		if d.UnmarshalBinary(b) == nil && d.ID == id {
			delete(e.kept, args)
		}
	}
}
