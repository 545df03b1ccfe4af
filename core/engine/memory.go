package engine

import (
	"fmt"

	"github.com/mori-go/mori-go/core"
	"github.com/mori-go/mori-go/internal/procmaps"
)

// regArgs are the arguments of a registration, by which a registration
// whose descriptor did not fit the caller's buffer is found again.
type regArgs struct {
	ptr    uintptr
	size   uint64
	device int
	loc    core.MemoryLocation
	opts   core.RegionOptions
}

// RegisterMemoryEncoded registers memory as RegisterMemoryWith does and
// returns its encoded descriptor, for a caller that has room for capacity
// bytes. It registers exactly once: when the descriptor is longer than
// capacity it returns the descriptor (so that the caller learns its
// length) with an ErrInvalidArgs error and keeps the registration; the
// next call with the same arguments returns that registration's
// descriptor instead of registering again.
func (e *Engine) RegisterMemoryEncoded(ptr uintptr, size uint64, device int, loc core.MemoryLocation, opts core.RegionOptions, capacity int) ([]byte, error) {
	args := regArgs{ptr: ptr, size: size, device: device, loc: loc, opts: opts}
	e.keptMu.Lock()
	b, kept := e.kept[args]
	e.keptMu.Unlock()
	if !kept {
		d, err := e.RegisterMemoryWith(ptr, size, device, loc, opts)
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

// RegisterMemory registers [ptr, ptr+size) with no options
// (RegisterMemoryWith) and returns its descriptor.
func (e *Engine) RegisterMemory(ptr uintptr, size uint64, device int, loc core.MemoryLocation) (core.MemoryDesc, error) {
	return e.RegisterMemoryWith(ptr, size, device, loc, core.RegionOptions{})
}

// RegisterMemoryWith registers [ptr, ptr+size) with opts (the element
// size of its data, for the shuffle of compressed writes from it) and
// returns its descriptor. GPU memory is checked with the GPU driver: it
// must be device memory of device, inside one allocation. Without a driver
// it is treated as host memory (logged once), if it is host memory mapped
// readable and writable in this process; anything else is refused.
func (e *Engine) RegisterMemoryWith(ptr uintptr, size uint64, device int, loc core.MemoryLocation, opts core.RegionOptions) (core.MemoryDesc, error) {
	host := true
	if loc == core.LocationGPU {
		if e.cfg.GPU != nil {
			if err := e.cfg.GPU.CheckDeviceRange(ptr, size, device); err != nil {
				return core.MemoryDesc{}, core.Errorf(core.ErrGPUOp, "register memory %#x len %d on GPU %d: %w", ptr, size, device, err)
			}
			host = false
		} else {
			// A device address read by the CPU crashes the process: without
			// a driver, only provable host memory passes as GPU memory.
			if err := procmaps.CheckReadWrite(ptr, size); err != nil {
				return core.MemoryDesc{}, core.Errorf(core.ErrGPUOp, "register memory %#x len %d on GPU %d: no GPU driver is loaded in this process, "+
					"and the range is not host memory of this process (%w): load the GPU driver (configuration \"gpu\") or register host memory as CPU memory", ptr, size, device, err)
			}
			e.gpuWarn.Do(func() {
				e.log.Warn("no GPU driver in this process: GPU registrations are treated as host memory (accepted only where mapped readable and writable in this process)")
			})
		}
	}
	r, err := e.reg.AddWith(ptr, size, loc, device, host, opts)
	if err != nil {
		return core.MemoryDesc{}, err
	}
	d := core.MemoryDesc{EngineKey: e.cfg.Key, ID: r.ID, Token: r.Token(), Device: int32(device), Location: loc, Addr: uint64(ptr), Size: size, NUMANode: -1}
	if loc == core.LocationCPU {
		d.Device = -1
	}
	e.mu.RLock()
	backends := e.backends
	e.mu.RUnlock()
	for _, b := range backends {
		if mb, ok := b.(core.MemoryBackend); ok {
			blob, err := mb.RegisterMemory(r)
			if err != nil {
				e.reg.Remove(r.ID)
				return core.MemoryDesc{}, fmt.Errorf("register memory %#x len %d with %s: %w", ptr, size, b.Type(), err)
			}
			if blob != nil {
				d.Backends = append(d.Backends, *blob)
			}
		}
	}
	return d, nil
}

// DeregisterMemory unregisters local memory. Transfers using it fail;
// once it returns, nothing reads or writes the memory any more. Memory
// that is not registered (any more) is no error, as in MORI-IO.
func (e *Engine) DeregisterMemory(d core.MemoryDesc) error {
	if d.EngineKey != e.cfg.Key {
		return core.Errorf(core.ErrInvalidArgs, "deregister memory %d: it belongs to engine %q, not %q", d.ID, d.EngineKey, e.cfg.Key)
	}
	r, err := e.reg.Remove(d.ID)
	if core.CodeOf(err) == core.ErrNotFound {
		// As in MORI-IO: memory deregistered already, or never, is no error.
		e.log.Debug("deregister memory: not registered (nothing to do)", "memory", d.ID)
		return nil
	}
	if err != nil {
		return err
	}
	e.forgetKept(d.ID)
	e.mu.RLock()
	backends := e.backends
	e.mu.RUnlock()
	for _, b := range backends {
		if mb, ok := b.(core.MemoryBackend); ok {
			mb.DeregisterMemory(r)
		}
	}
	return nil
}
