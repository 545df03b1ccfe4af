package gpu

/*
#include "cuda_table.h"
*/
import "C"

import (
	"errors"
	"fmt"
	"log/slog"
	"runtime"
	"sync"
	"unsafe"
)

// CUDA constants (cuda.h).
const (
	cuSuccess               = 0
	cuErrorInvalidValue     = 1
	cuErrorStubLibrary      = 34
	cuErrorNoDevice         = 100
	cuErrorInvalidContext   = 201
	cuErrorNotReady         = 600
	cuMemoryTypeDevice      = 2  // CU_MEMORYTYPE_DEVICE
	cuAttrMemoryType        = 2  // CU_POINTER_ATTRIBUTE_MEMORY_TYPE
	cuAttrDeviceOrdinal     = 9  // CU_POINTER_ATTRIBUTE_DEVICE_ORDINAL
	cuAttrLegacyIPC         = 10 // CU_POINTER_ATTRIBUTE_IS_LEGACY_CUDA_IPC_CAPABLE
	cuAttrRangeStartAddr    = 11 // CU_POINTER_ATTRIBUTE_RANGE_START_ADDR
	cuAttrRangeSize         = 12 // CU_POINTER_ATTRIBUTE_RANGE_SIZE
	cuDevAttrDmaBufSupport  = 124
	cuStreamNonBlocking     = 1 // CU_STREAM_NON_BLOCKING
	cuEventDisableTiming    = 2 // CU_EVENT_DISABLE_TIMING
	cuMemHostAllocPortable  = 1 // CU_MEMHOSTALLOC_PORTABLE
	cuIpcLazyPeerAccess     = 1 // CU_IPC_MEM_LAZY_ENABLE_PEER_ACCESS
	cuRangeHandleTypeDmaBuf = 1 // CU_MEM_RANGE_HANDLE_TYPE_DMA_BUF_FD
)

// cudaBackend drives NVIDIA GPUs through the CUDA driver API. It uses each
// device's primary context, the one the CUDA runtime (and torch) use, and
// retains it on first use of the device.
type cudaBackend struct {
	t     *C.cu_table // C memory
	ndev  int
	log   *slog.Logger
	fatal stickyState

	mu  sync.Mutex
	ctx []C.cu_ctx // retained primary contexts; nil until first use
	dev []C.int    // CUdevice of each retained context
}

func newCUDA(lib *library, log *slog.Logger) (*cudaBackend, error) {
	t := (*C.cu_table)(C.calloc(1, C.size_t(unsafe.Sizeof(C.cu_table{}))))
	if t == nil {
		return nil, fmt.Errorf("gpu: out of memory")
	}
	c := &cudaBackend{t: t, log: log}
	if missing := C.cu_load(lib.handle, t); missing != nil {
		C.free(unsafe.Pointer(t))
		return nil, fmt.Errorf("%w: %s has no %s", ErrNotSupported, lib.name, C.GoString(missing))
	}
	if r := C.cu_init(t, 0); r != cuSuccess {
		err := c.err("cuInit", r)
		C.free(unsafe.Pointer(t))
		if r == cuErrorNoDevice || r == cuErrorStubLibrary {
			return nil, fmt.Errorf("%w: %w", ErrNotSupported, err)
		}
		return nil, err
	}
	var n C.int
	if r := C.cu_device_get_count(t, &n); r != cuSuccess {
		C.free(unsafe.Pointer(t))
		return nil, c.err("cuDeviceGetCount", r)
	}
	c.ndev = int(n)
	c.ctx = make([]C.cu_ctx, c.ndev)
	c.dev = make([]C.int, c.ndev)
	return c, nil
}

// err turns a CUresult into an error; nil for CUDA_SUCCESS.
func (c *cudaBackend) err(op string, r C.cu_res) error {
	if r == cuSuccess {
		return nil
	}
	if r == C.cu_missing {
		return missingSymbol(op)
	}
	msg := "unknown error"
	var s *C.char
	if C.cu_get_error_string(c.t, r, &s) == cuSuccess && s != nil {
		msg = C.GoString(s)
	}
	return c.fatal.note(&driverError{op: op, code: int(r), msg: msg})
}

func (c *cudaBackend) deviceCount() int { return c.ndev }

// context returns the primary context of device, retaining it the first
// time.
func (c *cudaBackend) context(device int) (C.cu_ctx, error) {
	if device < 0 || device >= c.ndev {
		return nil, errNoDevice(device, c.ndev)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.ctx[device] != nil {
		return c.ctx[device], nil
	}
	var dev C.int
	if r := C.cu_device_get(c.t, &dev, C.int(device)); r != cuSuccess {
		return nil, c.err("cuDeviceGet", r)
	}
	var ctx C.cu_ctx
	if r := C.cu_primary_ctx_retain(c.t, &ctx, dev); r != cuSuccess {
		return nil, c.err("cuDevicePrimaryCtxRetain", r)
	}
	c.ctx[device] = ctx
	c.dev[device] = dev
	c.log.Debug("gpu: retained primary context", "device", device)
	return ctx, nil
}

// queryDevice is the device whose context a call that needs some context,
// but no particular one, runs in: hint when it names a device, else a
// device whose context is already retained, else 0. A rank that uses GPU 3
// thus never creates a context on GPU 0.
func (c *cudaBackend) queryDevice(hint int) int {
	if hint >= 0 && hint < c.ndev {
		return hint
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	for i, ctx := range c.ctx {
		if ctx != nil {
			return i
		}
	}
	return 0
}

// do runs f with device's primary context pushed on the calling OS thread
// and pops it afterwards, leaving the thread's context stack as it was.
func (c *cudaBackend) do(device int, op string, f func() C.cu_res) error {
	if err := c.fatal.check(); err != nil {
		return err
	}
	ctx, err := c.context(device)
	if err != nil {
		return err
	}
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	if r := C.cu_ctx_push_current(c.t, ctx); r != cuSuccess {
		return c.err("cuCtxPushCurrent_v2", r)
	}
	r := f()
	if pr := C.cu_ctx_pop_current(c.t); pr != cuSuccess && r == cuSuccess {
		return c.err("cuCtxPopCurrent_v2", pr)
	}
	return c.err(op, r)
}

// pointerInfo asks about ptr. Pointer queries need some context, not a
// particular one: they run bare when the thread has one, and otherwise in
// the context of hint (the device the caller expects), never by default in
// GPU 0's.
func (c *cudaBackend) pointerInfo(ptr uintptr, hint int) (PointerInfo, error) {
	if err := c.fatal.check(); err != nil {
		return PointerInfo{}, err
	}
	info, r, err := c.queryPointer(ptr)
	if r == cuErrorInvalidContext {
		var qerr error
		err = c.do(c.queryDevice(hint), "cuPointerGetAttribute", func() C.cu_res {
			info, r, qerr = c.queryPointer(ptr)
			return cuSuccess
		})
		if err == nil {
			err = qerr
		}
		if err == nil && r == cuErrorInvalidContext {
			err = c.err("cuPointerGetAttribute", r)
		}
	}
	return info, err
}

// queryPointer reads ptr's attributes in the thread's current context. It
// returns the result of the first query when that says there is no context.
func (c *cudaBackend) queryPointer(ptr uintptr) (PointerInfo, C.cu_res, error) {
	attr := func(data unsafe.Pointer, attr int) C.cu_res {
		return C.cu_pointer_get_attribute(c.t, data, C.int(attr), C.cu_dptr(ptr))
	}
	host := PointerInfo{Device: -1}
	var memType C.uint
	switch r := attr(unsafe.Pointer(&memType), cuAttrMemoryType); r {
	case cuSuccess:
	case cuErrorInvalidValue: // memory the driver does not know: plain host memory
		return host, r, nil
	case cuErrorInvalidContext:
		return PointerInfo{}, r, nil
	default:
		return PointerInfo{}, r, c.err("cuPointerGetAttribute(MEMORY_TYPE)", r)
	}
	if memType != cuMemoryTypeDevice { // page-locked host memory, arrays
		return host, cuSuccess, nil
	}
	var ord C.int
	if r := attr(unsafe.Pointer(&ord), cuAttrDeviceOrdinal); r != cuSuccess {
		return PointerInfo{}, r, c.err("cuPointerGetAttribute(DEVICE_ORDINAL)", r)
	}
	var start C.cu_dptr
	if r := attr(unsafe.Pointer(&start), cuAttrRangeStartAddr); r != cuSuccess {
		return PointerInfo{}, r, c.err("cuPointerGetAttribute(RANGE_START_ADDR)", r)
	}
	var size C.size_t
	if r := attr(unsafe.Pointer(&size), cuAttrRangeSize); r != cuSuccess {
		return PointerInfo{}, r, c.err("cuPointerGetAttribute(RANGE_SIZE)", r)
	}
	// Memory that legacy IPC cannot share is VMM memory (cuMemCreate and
	// cuMemMap, or a stream-ordered pool): its range is one mapping. Old
	// drivers without the attribute have no VMM.
	var legacy C.int
	vmm := attr(unsafe.Pointer(&legacy), cuAttrLegacyIPC) == cuSuccess && legacy == 0
	return PointerInfo{IsDevice: true, Device: int(ord), AllocBase: uintptr(start), AllocSize: uint64(size), VMM: vmm}, cuSuccess, nil
}

func (c *cudaBackend) allocDevice(n uint64, device int) (uintptr, error) {
	var p C.cu_dptr
	err := c.do(device, "cuMemAlloc_v2", func() C.cu_res { return C.cu_mem_alloc(c.t, &p, C.size_t(n)) })
	return uintptr(p), err
}

func (c *cudaBackend) freeDevice(ptr uintptr, device int) error {
	return c.do(device, "cuMemFree_v2", func() C.cu_res { return C.cu_mem_free(c.t, C.cu_dptr(ptr)) })
}

func (c *cudaBackend) allocHost(n int, device int) (unsafe.Pointer, error) {
	var p unsafe.Pointer
	err := c.do(device, "cuMemHostAlloc", func() C.cu_res {
		return C.cu_mem_host_alloc(c.t, &p, C.size_t(n), cuMemHostAllocPortable)
	})
	return p, err
}

func (c *cudaBackend) freeHost(p unsafe.Pointer, device int) error {
	return c.do(device, "cuMemFreeHost", func() C.cu_res { return C.cu_mem_free_host(c.t, p) })
}

func (c *cudaBackend) newStream(device int) (stream, error) {
	var s C.cu_stream
	var e C.cu_event
	err := c.do(device, "cuStreamCreate", func() C.cu_res { return C.cu_stream_create(c.t, &s, cuStreamNonBlocking) })
	if err != nil {
		return stream{}, err
	}
	err = c.do(device, "cuEventCreate", func() C.cu_res { return C.cu_event_create(c.t, &e, cuEventDisableTiming) })
	if err != nil {
		_ = c.do(device, "cuStreamDestroy_v2", func() C.cu_res { return C.cu_stream_destroy(c.t, s) })
		return stream{}, err
	}
	return stream{h: unsafe.Pointer(s), done: unsafe.Pointer(e)}, nil
}

func (c *cudaBackend) destroyStream(s stream, device int) error {
	return errors.Join(
		c.do(device, "cuEventDestroy_v2", func() C.cu_res { return C.cu_event_destroy(c.t, C.cu_event(s.done)) }),
		c.do(device, "cuStreamDestroy_v2", func() C.cu_res { return C.cu_stream_destroy(c.t, C.cu_stream(s.h)) }))
}

func (c *cudaBackend) recordDone(s stream, device int) error {
	return c.do(device, "cuEventRecord", func() C.cu_res {
		return C.cu_event_record(c.t, C.cu_event(s.done), C.cu_stream(s.h))
	})
}

// queryDone needs no context: an event knows its own.
func (c *cudaBackend) queryDone(s stream) (bool, error) {
	if err := c.fatal.check(); err != nil {
		return false, err
	}
	switch r := C.cu_event_query(c.t, C.cu_event(s.done)); r {
	case cuSuccess:
		return true, nil
	case cuErrorNotReady:
		return false, nil
	default:
		return false, c.err("cuEventQuery", r)
	}
}

func (c *cudaBackend) copyD2H(s stream, device int, dst unsafe.Pointer, src uintptr, n uint64) error {
	return c.do(device, "cuMemcpyDtoHAsync_v2", func() C.cu_res {
		return C.cu_memcpy_dtoh_async(c.t, dst, C.cu_dptr(src), C.size_t(n), C.cu_stream(s.h))
	})
}

func (c *cudaBackend) copyH2D(s stream, device int, dst uintptr, src unsafe.Pointer, n uint64) error {
	return c.do(device, "cuMemcpyHtoDAsync_v2", func() C.cu_res {
		return C.cu_memcpy_htod_async(c.t, C.cu_dptr(dst), src, C.size_t(n), C.cu_stream(s.h))
	})
}

func (c *cudaBackend) copyD2D(s stream, device int, dst, src uintptr, n uint64) error {
	return c.do(device, "cuMemcpyDtoDAsync_v2", func() C.cu_res {
		return C.cu_memcpy_dtod_async(c.t, C.cu_dptr(dst), C.cu_dptr(src), C.size_t(n), C.cu_stream(s.h))
	})
}

func (c *cudaBackend) ipcGet(ptr uintptr, device int) (IPCHandle, error) {
	var h IPCHandle
	err := c.do(device, "cuIpcGetMemHandle", func() C.cu_res {
		return C.cu_ipc_get_mem_handle(c.t, (*C.cu_ipc_handle)(unsafe.Pointer(&h)), C.cu_dptr(ptr))
	})
	return h, err
}

func (c *cudaBackend) ipcOpen(h *IPCHandle, device int) (uintptr, error) {
	var p C.cu_dptr
	err := c.do(device, "cuIpcOpenMemHandle_v2", func() C.cu_res {
		return C.cu_ipc_open_mem_handle(c.t, &p, (*C.cu_ipc_handle)(unsafe.Pointer(h)), cuIpcLazyPeerAccess)
	})
	return uintptr(p), err
}

func (c *cudaBackend) ipcClose(ptr uintptr, device int) error {
	return c.do(device, "cuIpcCloseMemHandle", func() C.cu_res { return C.cu_ipc_close_mem_handle(c.t, C.cu_dptr(ptr)) })
}

// dmabuf exports the host pages around [ptr, ptr+size): CUDA's dma-buf
// starts at the (page-aligned) address asked for.
func (c *cudaBackend) dmabuf(ptr uintptr, size uint64, info PointerInfo) (int, uint64, error) {
	device := info.Device
	if _, err := c.context(device); err != nil {
		return -1, 0, err
	}
	var ok C.int
	switch r := C.cu_device_get_attribute(c.t, &ok, cuDevAttrDmaBufSupport, C.int(device)); {
	case r == C.cu_missing: // old driver: let cuMemGetHandleForAddressRange decide
	case r != cuSuccess:
		return -1, 0, c.err("cuDeviceGetAttribute(DMA_BUF_SUPPORTED)", r)
	case ok == 0:
		return -1, 0, fmt.Errorf("%w: device %d does not support dma-buf (CU_DEVICE_ATTRIBUTE_DMA_BUF_SUPPORTED is 0: "+
			"NVIDIA's proprietary kernel modules; the open ones support it)", ErrNotSupported, device)
	}
	start, end := pageSpan(ptr, size)
	fd := C.int(-1)
	err := c.do(device, "cuMemGetHandleForAddressRange", func() C.cu_res {
		return C.cu_mem_get_handle_for_address_range(c.t, &fd, C.cu_dptr(start), C.size_t(end-start), cuRangeHandleTypeDmaBuf, 0)
	})
	if err != nil {
		return -1, 0, err
	}
	return int(fd), uint64(ptr - start), nil
}

// pciBusID needs the CUdevice only: no context is retained for it.
func (c *cudaBackend) pciBusID(device int) (string, error) {
	if device < 0 || device >= c.ndev {
		return "", errNoDevice(device, c.ndev)
	}
	var dev C.int
	if r := C.cu_device_get(c.t, &dev, C.int(device)); r != cuSuccess {
		return "", c.err("cuDeviceGet", r)
	}
	var buf [64]C.char
	if r := C.cu_device_get_pci_bus_id(c.t, &buf[0], C.int(len(buf)), dev); r != cuSuccess {
		return "", c.err("cuDeviceGetPCIBusId", r)
	}
	return C.GoString(&buf[0]), nil
}

func (c *cudaBackend) close() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	var first error
	for i, ctx := range c.ctx {
		if ctx == nil {
			continue
		}
		if r := C.cu_primary_ctx_release(c.t, c.dev[i]); r != cuSuccess && first == nil {
			first = c.err("cuDevicePrimaryCtxRelease_v2", r)
		}
		c.ctx[i] = nil
	}
	C.free(unsafe.Pointer(c.t))
	c.t = nil
	return first
}
