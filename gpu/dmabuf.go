package gpu

import (
	"fmt"
	"os"
)

// DmabufFD exports the device memory [ptr, ptr+size) as a dma-buf for
// GPUDirect RDMA: register it with ibv_reg_dmabuf_mr(pd, offset, size,
// iova=ptr, fd, access). The exported range is [ptr, ptr+size) widened to
// whole host pages, and offset is where ptr lies in it. The caller owns fd
// and closes it (the MR keeps its own reference). The error wraps
// ErrNotSupported when the driver or device cannot export dma-bufs, in which
// case callers fall back to ibv_reg_mr with nvidia-peermem/amdgpu peer
// memory, or to staging.
func (d *Driver) DmabufFD(ptr uintptr, size uint64) (fd int, offset uint64, err error) {
	if err := d.enter(); err != nil {
		return -1, 0, err
	}
	defer d.mu.RUnlock()
	info, err := d.b.pointerInfo(ptr)
	if err != nil {
		return -1, 0, err
	}
	if !info.IsDevice {
		return -1, 0, fmt.Errorf("gpu: DmabufFD(%#x): pointer is host memory", ptr)
	}
	if size == 0 || uint64(ptr)+size < uint64(ptr) {
		return -1, 0, fmt.Errorf("gpu: DmabufFD(%#x, %d): bad size", ptr, size)
	}
	page := uint64(os.Getpagesize())
	start := uint64(ptr) &^ (page - 1)
	end := (uint64(ptr) + size + page - 1) &^ (page - 1)
	fd, err = d.b.dmabuf(uintptr(start), end-start, info.Device)
	if err != nil {
		return -1, 0, err
	}
	return fd, uint64(ptr) - start, nil
}

// ExportDmabuf is DmabufFD for callers that also know the device the
// memory belongs to (the RDMA backend's DmabufExporter): it fails when the
// memory is not on device.
func (d *Driver) ExportDmabuf(ptr uintptr, size uint64, device int) (fd int, offset uint64, err error) {
	info, err := d.PointerInfo(ptr)
	if err != nil {
		return -1, 0, err
	}
	if info.IsDevice && info.Device != device {
		return -1, 0, fmt.Errorf("gpu: ExportDmabuf(%#x): memory of device %d, not %d", ptr, info.Device, device)
	}
	return d.DmabufFD(ptr, size)
}
