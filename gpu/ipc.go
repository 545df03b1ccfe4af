package gpu

import (
	"fmt"
)

// IPCHandle is a CUDA or HIP IPC memory handle: 64 opaque bytes that
// another process on the same node opens with IPCOpen or IPCMap. It is an
// alias of [64]byte, so that interfaces declared elsewhere with a plain
// [64]byte (core.GPUIPC) match the Driver's methods.
type IPCHandle = [64]byte

// IPCExport returns the IPC handle of the device allocation that contains
// ptr and the offset of ptr inside it. Handles always name the allocation
// base, because opening one maps the whole allocation and returns its base
// whatever pointer the handle was made from; the importer adds offset.
func (d *Driver) IPCExport(ptr uintptr) (h IPCHandle, offset uint64, err error) {
	if err := d.enter(); err != nil {
		return h, 0, err
	}
	defer d.mu.RUnlock()
	info, err := d.b.pointerInfo(ptr, -1)
	if err != nil {
		return h, 0, err
	}
	if !info.IsDevice {
		return h, 0, fmt.Errorf("gpu: IPCExport(%#x): pointer is host memory", ptr)
	}
	if info.VMM {
		// Sharing it takes cuMemRetainAllocationHandle and
		// cuMemExportToShareableHandle (a file descriptor passed to the
		// peer): not done yet, see docs/hardware.md.
		return h, 0, fmt.Errorf("%w: IPCExport(%#x): VMM memory (cuMemCreate/cuMemMap, e.g. PyTorch expandable_segments), which legacy IPC cannot share", ErrNotSupported, ptr)
	}
	h, err = d.b.ipcGet(info.AllocBase, info.Device)
	if err != nil {
		return h, 0, err
	}
	return h, uint64(ptr - info.AllocBase), nil
}

// IPCOpen maps an allocation exported by another process (IPCExport) into
// this one, on device, and returns the address of offset inside it. close
// unmaps it; it may be called once. CUDA and HIP refuse to open a handle in
// the process that exported it.
func (d *Driver) IPCOpen(h IPCHandle, offset uint64, device int) (ptr uintptr, close func() error, err error) {
	if err := d.enter(); err != nil {
		return 0, nil, err
	}
	defer d.mu.RUnlock()
	base, err := d.b.ipcOpen(&h, device)
	if err != nil {
		return 0, nil, err
	}
	unmap := func() error { return d.b.ipcClose(base, device) }
	if info, err := d.b.pointerInfo(base, device); err == nil && info.IsDevice && offset >= info.AllocSize {
		_ = unmap()
		return 0, nil, fmt.Errorf("gpu: IPCOpen: offset %d is outside the %d-byte allocation", offset, info.AllocSize)
	}
	close = onceErr(func() error {
		if err := d.enter(); err != nil {
			return err
		}
		defer d.mu.RUnlock()
		return unmap()
	})
	return base + uintptr(offset), close, nil
}

// IPCMap maps the whole allocation that h names (IPCExport's handle) on
// device, and returns its base address and size in this process; callers
// add the exporter's offset and keep their accesses inside [base,
// base+size). unmap releases the mapping; it may be called once. CUDA and
// HIP refuse to open a handle in the process that exported it, and refuse
// to open one handle twice in one process: callers share one mapping per
// handle and device.
func (d *Driver) IPCMap(h IPCHandle, device int) (base uintptr, size uint64, unmap func() error, err error) {
	if err := d.enter(); err != nil {
		return 0, 0, nil, err
	}
	defer d.mu.RUnlock()
	base, err = d.b.ipcOpen(&h, device)
	if err != nil {
		return 0, 0, nil, err
	}
	release := func() error { return d.b.ipcClose(base, device) }
	info, err := d.b.pointerInfo(base, device)
	switch {
	case err != nil:
		_ = release()
		return 0, 0, nil, fmt.Errorf("gpu: IPCMap: size of the mapped allocation: %w", err)
	case !info.IsDevice || base < info.AllocBase || uint64(base-info.AllocBase) >= info.AllocSize:
		_ = release()
		return 0, 0, nil, fmt.Errorf("gpu: IPCMap: the driver does not report the mapping at %#x as device memory", base)
	}
	// The mapping starts at the allocation base (IPCExport exports bases);
	// should a driver report a larger range around it, only what lies from
	// base on is usable.
	size = info.AllocSize - uint64(base-info.AllocBase)
	unmap = onceErr(func() error {
		if err := d.enter(); err != nil {
			return err
		}
		defer d.mu.RUnlock()
		return release()
	})
	return base, size, unmap, nil
}
