package gpu

import (
	"fmt"
	"runtime"
	"unsafe"
)

// getStream takes an idle stream of device from the pool, or makes one.
func (d *Driver) getStream(device int) (stream, error) {
	d.poolMu.Lock()
	if ss := d.streams[device]; len(ss) > 0 {
		s := ss[len(ss)-1]
		d.streams[device] = ss[:len(ss)-1]
		d.poolMu.Unlock()
		return s, nil
	}
	d.poolMu.Unlock()
	s, err := d.b.newStream(device)
	if err != nil {
		return stream{}, err
	}
	d.log.Debug("gpu: created stream", "device", device)
	return s, nil
}

func (d *Driver) putStream(device int, s stream) {
	d.poolMu.Lock()
	d.streams[device] = append(d.streams[device], s)
	d.poolMu.Unlock()
}

// syncCopy runs copy on a pooled stream of device and waits for it. A
// stream whose copy or wait failed is destroyed rather than reused.
func (d *Driver) syncCopy(device int, copy func(s stream) error) error {
	if err := d.enter(); err != nil {
		return err
	}
	defer d.mu.RUnlock()
	s, err := d.getStream(device)
	if err != nil {
		return err
	}
	err = copy(s)
	if err == nil {
		err = d.waitStream(s, device)
	}
	if err != nil {
		_ = d.waitStream(s, device) // what was queued finishes before the stream goes
		_ = d.b.destroyStream(s, device)
		return err
	}
	d.putStream(device, s)
	return nil
}

// CopyToHost copies len(dst) bytes from device memory at src into dst and
// returns when they have arrived. It copies on a stream of the Driver's,
// not the default stream, so it does not wait for other work on the device.
// Callers check the range once, with CheckDeviceRange, when they register
// memory.
func (d *Driver) CopyToHost(dst []byte, src uintptr, device int) error {
	if len(dst) == 0 {
		return nil
	}
	// The DMA engine writes dst after the enqueueing call has returned;
	// keep it pinned until the stream has been synchronized.
	var pin runtime.Pinner
	pin.Pin(&dst[0])
	defer pin.Unpin()
	return d.syncCopy(device, func(s stream) error {
		return d.b.copyD2H(s, device, unsafe.Pointer(&dst[0]), src, uint64(len(dst)))
	})
}

// CopyFromHost copies src into device memory at dst and returns when the
// copy is complete.
func (d *Driver) CopyFromHost(dst uintptr, src []byte, device int) error {
	if len(src) == 0 {
		return nil
	}
	var pin runtime.Pinner
	pin.Pin(&src[0])
	defer pin.Unpin()
	return d.syncCopy(device, func(s stream) error {
		return d.b.copyH2D(s, device, dst, unsafe.Pointer(&src[0]), uint64(len(src)))
	})
}

// CopyDeviceToDevice copies n bytes between device allocations (the same
// device, or peers) on a stream of device and returns when it is complete.
func (d *Driver) CopyDeviceToDevice(dst, src uintptr, n uint64, device int) error {
	if n == 0 {
		return nil
	}
	return d.syncCopy(device, func(s stream) error {
		return d.b.copyD2D(s, device, dst, src, n)
	})
}

// Copy is one device-to-device copy of a batch: Size bytes from Src to Dst.
//
// Copy, like Span, is an alias of an unnamed struct type rather than a
// defined type, so that a package declaring the same alias (core's
// DeviceCopy) names the very same type, and the Driver satisfies that
// package's interfaces without that package importing this one.
type Copy = struct {
	Dst, Src uintptr
	Size     uint64
}

// CopyDeviceBatch runs copies, in order, on one stream of device and
// returns when all are complete: one wait for the whole batch rather than
// one per copy. Each copy is between device allocations (of device, of its
// peers, or opened with IPCMap).
func (d *Driver) CopyDeviceBatch(device int, copies []Copy) error {
	if len(copies) == 0 {
		return nil
	}
	return d.syncCopy(device, func(s stream) error {
		for i, c := range copies {
			if c.Size == 0 {
				continue
			}
			if err := d.b.copyD2D(s, device, c.Dst, c.Src, c.Size); err != nil {
				return fmt.Errorf("copy %d of %d (%#x to %#x, %d bytes): %w", i+1, len(copies), c.Src, c.Dst, c.Size, err)
			}
		}
		return nil
	})
}

// AllocPinned allocates n bytes of page-locked host memory, outside the Go
// heap, that the GPU can reach by DMA, in device's context (the one that
// will copy it: no other device gets a context for it). free releases it;
// buf must not be used after free, and free may be called once.
func (d *Driver) AllocPinned(n int, device int) (buf []byte, free func() error, err error) {
	if n <= 0 {
		return nil, nil, fmt.Errorf("gpu: AllocPinned(%d): size must be positive", n)
	}
	if err := d.enter(); err != nil {
		return nil, nil, err
	}
	defer d.mu.RUnlock()
	if device < 0 || device >= d.b.deviceCount() {
		return nil, nil, errNoDevice(device, d.b.deviceCount())
	}
	p, err := d.b.allocHost(n, device)
	if err != nil {
		return nil, nil, err
	}
	free = onceErr(func() error {
		if err := d.enter(); err != nil {
			return err
		}
		defer d.mu.RUnlock()
		return d.b.freeHost(p, device)
	})
	return unsafe.Slice((*byte)(p), n), free, nil
}

// AllocDevice allocates n bytes of device memory with cuMemAlloc or
// hipMalloc. It is a helper for tests and benchmarks: the engine transfers
// memory that the application (torch) allocated.
func (d *Driver) AllocDevice(n uint64, device int) (uintptr, error) {
	if n == 0 {
		return 0, fmt.Errorf("gpu: AllocDevice(0): size must be positive")
	}
	if err := d.enter(); err != nil {
		return 0, err
	}
	defer d.mu.RUnlock()
	return d.b.allocDevice(n, device)
}

// FreeDevice frees memory from AllocDevice. Like AllocDevice, it is a test
// helper.
func (d *Driver) FreeDevice(ptr uintptr) error {
	if err := d.enter(); err != nil {
		return err
	}
	defer d.mu.RUnlock()
	info, err := d.b.pointerInfo(ptr, -1)
	if err != nil {
		return err
	}
	if !info.IsDevice || info.AllocBase != ptr {
		return fmt.Errorf("gpu: FreeDevice(%#x): not the start of a device allocation", ptr)
	}
	return d.b.freeDevice(ptr, info.Device)
}
