package gpu

import (
	"fmt"
	"os"
)

// DmabufFD exports the device memory [ptr, ptr+size) as a dma-buf for
// GPUDirect RDMA: register it with ibv_reg_dmabuf_mr(pd, offset, size,
// iova=ptr, fd, access). The dma-buf is [ptr, ptr+size) widened to whole
// host pages (CUDA) or the whole allocation around ptr (HIP), and offset is
// where ptr lies in it. The caller owns fd and closes it (the MR keeps its
// own reference). The error wraps ErrNotSupported when the driver or device
// cannot export dma-bufs, in which case callers fall back to ibv_reg_mr
// with nvidia-peermem/amdgpu peer memory, or to staging.
func (d *Driver) DmabufFD(ptr uintptr, size uint64) (fd int, offset uint64, err error) {
	return d.exportDmabuf(ptr, size, -1)
}

// ExportDmabuf is DmabufFD for callers that also know the device the
// memory belongs to (the RDMA backend's DmabufExporter): it fails when the
// memory is not on device.
func (d *Driver) ExportDmabuf(ptr uintptr, size uint64, device int) (fd int, offset uint64, err error) {
	return d.exportDmabuf(ptr, size, device)
}

// exportDmabuf is DmabufFD, checking the device when device >= 0.
func (d *Driver) exportDmabuf(ptr uintptr, size uint64, device int) (fd int, offset uint64, err error) {
	if err := d.enter(); err != nil {
		return -1, 0, err
	}
	defer d.mu.RUnlock()
	info, err := d.b.pointerInfo(ptr, device)
	switch {
	case err != nil:
		return -1, 0, err
	case !info.IsDevice:
		return -1, 0, fmt.Errorf("gpu: DmabufFD(%#x): pointer is host memory", ptr)
	case device >= 0 && info.Device != device:
		return -1, 0, fmt.Errorf("gpu: ExportDmabuf(%#x): memory of device %d, not %d", ptr, info.Device, device)
	case size == 0 || uint64(ptr)+size < uint64(ptr):
		return -1, 0, fmt.Errorf("gpu: DmabufFD(%#x, %d): bad size", ptr, size)
	}
	return d.b.dmabuf(ptr, size, info)
}

// pageSpan widens [ptr, ptr+size) to whole host pages.
func pageSpan(ptr uintptr, size uint64) (start, end uintptr) {
	page := uintptr(os.Getpagesize())
	return ptr &^ (page - 1), (ptr + uintptr(size) + page - 1) &^ (page - 1)
}
