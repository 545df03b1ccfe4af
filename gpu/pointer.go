package gpu

import (
	"fmt"
)

// PointerInfo is what the driver knows about an address.
type PointerInfo struct {
	// IsDevice is true for device memory; false for host memory, page-locked
	// or not.
	IsDevice bool
	// Device is the ordinal of the device that owns the memory; -1 for host
	// memory.
	Device int
	// AllocBase and AllocSize are the allocation that contains the address
	// (device memory only). Memory from a caching allocator (torch) reports
	// the allocator's whole segment.
	AllocBase uintptr
	AllocSize uint64
	// VMM is true for memory that legacy IPC cannot share: mapped with
	// cuMemCreate/cuMemMap (PyTorch's expandable_segments) or from a
	// stream-ordered pool. AllocBase and AllocSize are then one mapping,
	// and a buffer may span several adjacent ones.
	VMM bool
}

// PointerInfo asks the driver about ptr.
func (d *Driver) PointerInfo(ptr uintptr) (PointerInfo, error) {
	if err := d.enter(); err != nil {
		return PointerInfo{}, err
	}
	defer d.mu.RUnlock()
	return d.b.pointerInfo(ptr, -1)
}

// CheckDeviceRange returns nil when all of [ptr, ptr+size) is device memory
// of device inside one allocation, and otherwise an error that says what is
// wrong, e.g. "gpu range 0x7f0000001000+4096 on device 1: belongs to device 0".
func (d *Driver) CheckDeviceRange(ptr uintptr, size uint64, device int) error {
	if err := d.enter(); err != nil {
		return err
	}
	defer d.mu.RUnlock()
	bad := func(format string, args ...any) error {
		return fmt.Errorf("gpu range %#x+%d on device %d: %s", ptr, size, device, fmt.Sprintf(format, args...))
	}
	switch {
	case ptr == 0:
		return bad("null pointer")
	case size == 0:
		return bad("empty range")
	case uint64(ptr)+size < uint64(ptr):
		return bad("range wraps around the address space")
	case device < 0 || device >= d.b.deviceCount():
		return bad("no such device (%d devices)", d.b.deviceCount())
	}
	info, err := d.b.pointerInfo(ptr, device)
	if err != nil {
		return fmt.Errorf("gpu range %#x+%d on device %d: %w", ptr, size, device, err)
	}
	if !info.IsDevice {
		return bad("pointer is host memory")
	}
	if info.Device != device {
		return bad("belongs to device %d", info.Device)
	}
	end := uint64(ptr) + size
	for {
		allocEnd := uint64(info.AllocBase) + info.AllocSize
		if end <= allocEnd {
			return nil
		}
		next, err := d.b.pointerInfo(uintptr(allocEnd), device)
		switch {
		case err != nil || !next.IsDevice:
			return bad("extends past the end of allocation %#x+%d", info.AllocBase, info.AllocSize)
		case !info.VMM || !next.VMM:
			return bad("spans allocations (allocation %#x+%d ends before range end)", info.AllocBase, info.AllocSize)
		case next.Device != device:
			return bad("spans devices (the mapping at %#x belongs to device %d)", allocEnd, next.Device)
		case uint64(next.AllocBase) != allocEnd:
			return bad("mapping %#x+%d does not start where the one before it ends", next.AllocBase, next.AllocSize)
		}
		// VMM memory: the next mapping continues the range.
		info = next
	}
}
