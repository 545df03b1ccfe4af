package gpu

/*
#include <dlfcn.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

// The few CUDA driver API types used here, declared without cuda.h.
typedef int cu_res;                      // CUresult
typedef unsigned long long cu_dptr;      // CUdeviceptr
typedef void *cu_ctx;                    // CUcontext
typedef void *cu_stream;                 // CUstream
typedef struct { unsigned char reserved[64]; } cu_ipc_handle; // CUipcMemHandle

// cu_missing is returned by a trampoline whose optional symbol the driver
// lacks.
#define cu_missing (-1)

typedef struct {
	cu_res (*init)(unsigned int);
	cu_res (*deviceGetCount)(int *);
	cu_res (*deviceGet)(int *, int);
	cu_res (*deviceGetAttribute)(int *, int, int);
	cu_res (*primaryCtxRetain)(cu_ctx *, int);
	cu_res (*primaryCtxRelease)(int);
	cu_res (*ctxPushCurrent)(cu_ctx);
	cu_res (*ctxPopCurrent)(cu_ctx *);
	cu_res (*pointerGetAttribute)(void *, int, cu_dptr);
	cu_res (*memAlloc)(cu_dptr *, size_t);
	cu_res (*memFree)(cu_dptr);
	cu_res (*memHostAlloc)(void **, size_t, unsigned int);
	cu_res (*memFreeHost)(void *);
	cu_res (*streamCreate)(cu_stream *, unsigned int);
	cu_res (*streamDestroy)(cu_stream);
	cu_res (*streamSynchronize)(cu_stream);
	cu_res (*memcpyDtoHAsync)(void *, cu_dptr, size_t, cu_stream);
	cu_res (*memcpyHtoDAsync)(cu_dptr, const void *, size_t, cu_stream);
	cu_res (*memcpyDtoDAsync)(cu_dptr, cu_dptr, size_t, cu_stream);
	cu_res (*ipcGetMemHandle)(cu_ipc_handle *, cu_dptr);
	cu_res (*ipcOpenMemHandle)(cu_dptr *, cu_ipc_handle, unsigned int);
	cu_res (*ipcCloseMemHandle)(cu_dptr);
	cu_res (*memGetHandleForAddressRange)(void *, cu_dptr, size_t, int, unsigned long long);
	cu_res (*getErrorString)(cu_res, const char **);
	cu_res (*deviceGetPCIBusId)(char *, int, int);
} cu_table;

typedef struct {
	const char *name;
	const char *fallback; // older name, tried when name is absent
	size_t off;
	int required;
} cu_sym;

// cu_load fills t from lib. It returns NULL, or the name of the first
// required symbol that lib lacks.
static const char *cu_load(void *lib, cu_table *t) {
	static const cu_sym syms[] = {
		{"cuInit", NULL, offsetof(cu_table, init), 1},
		{"cuDeviceGetCount", NULL, offsetof(cu_table, deviceGetCount), 1},
		{"cuDeviceGet", NULL, offsetof(cu_table, deviceGet), 1},
		{"cuDeviceGetAttribute", NULL, offsetof(cu_table, deviceGetAttribute), 0},
		{"cuDevicePrimaryCtxRetain", NULL, offsetof(cu_table, primaryCtxRetain), 1},
		{"cuDevicePrimaryCtxRelease_v2", "cuDevicePrimaryCtxRelease", offsetof(cu_table, primaryCtxRelease), 1},
		{"cuCtxPushCurrent_v2", NULL, offsetof(cu_table, ctxPushCurrent), 1},
		{"cuCtxPopCurrent_v2", NULL, offsetof(cu_table, ctxPopCurrent), 1},
		{"cuPointerGetAttribute", NULL, offsetof(cu_table, pointerGetAttribute), 1},
		{"cuMemAlloc_v2", NULL, offsetof(cu_table, memAlloc), 1},
		{"cuMemFree_v2", NULL, offsetof(cu_table, memFree), 1},
		{"cuMemHostAlloc", NULL, offsetof(cu_table, memHostAlloc), 1},
		{"cuMemFreeHost", NULL, offsetof(cu_table, memFreeHost), 1},
		{"cuStreamCreate", NULL, offsetof(cu_table, streamCreate), 1},
		{"cuStreamDestroy_v2", "cuStreamDestroy", offsetof(cu_table, streamDestroy), 1},
		{"cuStreamSynchronize", NULL, offsetof(cu_table, streamSynchronize), 1},
		{"cuMemcpyDtoHAsync_v2", NULL, offsetof(cu_table, memcpyDtoHAsync), 1},
		{"cuMemcpyHtoDAsync_v2", NULL, offsetof(cu_table, memcpyHtoDAsync), 1},
		{"cuMemcpyDtoDAsync_v2", NULL, offsetof(cu_table, memcpyDtoDAsync), 1},
		{"cuIpcGetMemHandle", NULL, offsetof(cu_table, ipcGetMemHandle), 1},
		{"cuIpcOpenMemHandle_v2", "cuIpcOpenMemHandle", offsetof(cu_table, ipcOpenMemHandle), 1},
		{"cuIpcCloseMemHandle", NULL, offsetof(cu_table, ipcCloseMemHandle), 1},
		{"cuMemGetHandleForAddressRange", NULL, offsetof(cu_table, memGetHandleForAddressRange), 0},
		{"cuGetErrorString", NULL, offsetof(cu_table, getErrorString), 1},
		{"cuDeviceGetPCIBusId", NULL, offsetof(cu_table, deviceGetPCIBusId), 0},
	};
	for (size_t i = 0; i < sizeof syms / sizeof syms[0]; i++) {
		void *p = dlsym(lib, syms[i].name);
		if (p == NULL && syms[i].fallback != NULL) p = dlsym(lib, syms[i].fallback);
		if (p == NULL && syms[i].required) return syms[i].name;
		memcpy((char *)t + syms[i].off, &p, sizeof p);
	}
	return NULL;
}

// One trampoline per function pointer: cgo cannot call C function pointers.
static cu_res cu_init(cu_table *t, unsigned int flags) { return t->init(flags); }
static cu_res cu_device_get_count(cu_table *t, int *n) { return t->deviceGetCount(n); }
static cu_res cu_device_get(cu_table *t, int *d, int ordinal) { return t->deviceGet(d, ordinal); }
static cu_res cu_device_get_attribute(cu_table *t, int *v, int attr, int d) {
	return t->deviceGetAttribute ? t->deviceGetAttribute(v, attr, d) : cu_missing;
}
static cu_res cu_primary_ctx_retain(cu_table *t, cu_ctx *c, int d) { return t->primaryCtxRetain(c, d); }
static cu_res cu_primary_ctx_release(cu_table *t, int d) { return t->primaryCtxRelease(d); }
static cu_res cu_ctx_push_current(cu_table *t, cu_ctx c) { return t->ctxPushCurrent(c); }
static cu_res cu_ctx_pop_current(cu_table *t) { cu_ctx c; return t->ctxPopCurrent(&c); }
static cu_res cu_pointer_get_attribute(cu_table *t, void *data, int attr, cu_dptr p) {
	return t->pointerGetAttribute(data, attr, p);
}
static cu_res cu_mem_alloc(cu_table *t, cu_dptr *p, size_t n) { return t->memAlloc(p, n); }
static cu_res cu_mem_free(cu_table *t, cu_dptr p) { return t->memFree(p); }
static cu_res cu_mem_host_alloc(cu_table *t, void **p, size_t n, unsigned int flags) {
	return t->memHostAlloc(p, n, flags);
}
static cu_res cu_mem_free_host(cu_table *t, void *p) { return t->memFreeHost(p); }
static cu_res cu_stream_create(cu_table *t, cu_stream *s, unsigned int flags) { return t->streamCreate(s, flags); }
static cu_res cu_stream_destroy(cu_table *t, cu_stream s) { return t->streamDestroy(s); }
static cu_res cu_stream_synchronize(cu_table *t, cu_stream s) { return t->streamSynchronize(s); }
static cu_res cu_memcpy_dtoh_async(cu_table *t, void *dst, cu_dptr src, size_t n, cu_stream s) {
	return t->memcpyDtoHAsync(dst, src, n, s);
}
static cu_res cu_memcpy_htod_async(cu_table *t, cu_dptr dst, const void *src, size_t n, cu_stream s) {
	return t->memcpyHtoDAsync(dst, src, n, s);
}
static cu_res cu_memcpy_dtod_async(cu_table *t, cu_dptr dst, cu_dptr src, size_t n, cu_stream s) {
	return t->memcpyDtoDAsync(dst, src, n, s);
}
static cu_res cu_ipc_get_mem_handle(cu_table *t, cu_ipc_handle *h, cu_dptr p) { return t->ipcGetMemHandle(h, p); }
static cu_res cu_ipc_open_mem_handle(cu_table *t, cu_dptr *p, const cu_ipc_handle *h, unsigned int flags) {
	return t->ipcOpenMemHandle(p, *h, flags);
}
static cu_res cu_ipc_close_mem_handle(cu_table *t, cu_dptr p) { return t->ipcCloseMemHandle(p); }
static cu_res cu_mem_get_handle_for_address_range(cu_table *t, int *fd, cu_dptr p, size_t n, int type,
                                                  unsigned long long flags) {
	return t->memGetHandleForAddressRange ? t->memGetHandleForAddressRange(fd, p, n, type, flags) : cu_missing;
}
static cu_res cu_get_error_string(cu_table *t, cu_res r, const char **s) { return t->getErrorString(r, s); }
static cu_res cu_device_get_pci_bus_id(cu_table *t, char *id, int n, int d) {
	return t->deviceGetPCIBusId ? t->deviceGetPCIBusId(id, n, d) : cu_missing;
}
*/
import "C"

import (
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
	cuMemoryTypeDevice      = 2  // CU_MEMORYTYPE_DEVICE
	cuAttrMemoryType        = 2  // CU_POINTER_ATTRIBUTE_MEMORY_TYPE
	cuAttrDeviceOrdinal     = 9  // CU_POINTER_ATTRIBUTE_DEVICE_ORDINAL
	cuAttrRangeStartAddr    = 11 // CU_POINTER_ATTRIBUTE_RANGE_START_ADDR
	cuAttrRangeSize         = 12 // CU_POINTER_ATTRIBUTE_RANGE_SIZE
	cuDevAttrDmaBufSupport  = 124
	cuStreamNonBlocking     = 1 // CU_STREAM_NON_BLOCKING
	cuMemHostAllocPortable  = 1 // CU_MEMHOSTALLOC_PORTABLE
	cuIpcLazyPeerAccess     = 1 // CU_IPC_MEM_LAZY_ENABLE_PEER_ACCESS
	cuRangeHandleTypeDmaBuf = 1 // CU_MEM_RANGE_HANDLE_TYPE_DMA_BUF_FD
)

// cudaBackend drives NVIDIA GPUs through the CUDA driver API. It uses each
// device's primary context, the one the CUDA runtime (and torch) use, and
// retains it on first use of the device.
type cudaBackend struct {
	t    *C.cu_table // C memory
	ndev int
	log  *slog.Logger

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
	return &driverError{op: op, code: int(r), msg: msg}
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

// anyDevice is a device whose context is already retained, or 0: for calls
// that need some context but no particular one.
func (c *cudaBackend) anyDevice() int {
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

// attr reads one pointer attribute. Pointer queries need no particular
// context; if the driver wants one anyway, the query is retried in one.
func (c *cudaBackend) attr(data unsafe.Pointer, attr int, ptr uintptr) C.cu_res {
	r := C.cu_pointer_get_attribute(c.t, data, C.int(attr), C.cu_dptr(ptr))
	if r == cuErrorInvalidContext {
		_ = c.do(c.anyDevice(), "cuPointerGetAttribute", func() C.cu_res {
			r = C.cu_pointer_get_attribute(c.t, data, C.int(attr), C.cu_dptr(ptr))
			return r
		})
	}
	return r
}

func (c *cudaBackend) pointerInfo(ptr uintptr) (PointerInfo, error) {
	host := PointerInfo{Device: -1}
	var memType C.uint
	switch r := c.attr(unsafe.Pointer(&memType), cuAttrMemoryType, ptr); r {
	case cuSuccess:
	case cuErrorInvalidValue: // memory the driver does not know: plain host memory
		return host, nil
	default:
		return PointerInfo{}, c.err("cuPointerGetAttribute(MEMORY_TYPE)", r)
	}
	if memType != cuMemoryTypeDevice { // page-locked host memory, arrays
		return host, nil
	}
	var ord C.int
	if r := c.attr(unsafe.Pointer(&ord), cuAttrDeviceOrdinal, ptr); r != cuSuccess {
		return PointerInfo{}, c.err("cuPointerGetAttribute(DEVICE_ORDINAL)", r)
	}
	var start C.cu_dptr
	if r := c.attr(unsafe.Pointer(&start), cuAttrRangeStartAddr, ptr); r != cuSuccess {
		return PointerInfo{}, c.err("cuPointerGetAttribute(RANGE_START_ADDR)", r)
	}
	var size C.size_t
	if r := c.attr(unsafe.Pointer(&size), cuAttrRangeSize, ptr); r != cuSuccess {
		return PointerInfo{}, c.err("cuPointerGetAttribute(RANGE_SIZE)", r)
	}
	return PointerInfo{IsDevice: true, Device: int(ord), AllocBase: uintptr(start), AllocSize: uint64(size)}, nil
}

func (c *cudaBackend) allocDevice(n uint64, device int) (uintptr, error) {
	var p C.cu_dptr
	err := c.do(device, "cuMemAlloc_v2", func() C.cu_res { return C.cu_mem_alloc(c.t, &p, C.size_t(n)) })
	return uintptr(p), err
}

func (c *cudaBackend) freeDevice(ptr uintptr, device int) error {
	return c.do(device, "cuMemFree_v2", func() C.cu_res { return C.cu_mem_free(c.t, C.cu_dptr(ptr)) })
}

func (c *cudaBackend) allocHost(n int) (unsafe.Pointer, error) {
	var p unsafe.Pointer
	err := c.do(c.anyDevice(), "cuMemHostAlloc", func() C.cu_res {
		return C.cu_mem_host_alloc(c.t, &p, C.size_t(n), cuMemHostAllocPortable)
	})
	return p, err
}

func (c *cudaBackend) freeHost(p unsafe.Pointer) error {
	return c.do(c.anyDevice(), "cuMemFreeHost", func() C.cu_res { return C.cu_mem_free_host(c.t, p) })
}

func (c *cudaBackend) newStream(device int) (unsafe.Pointer, error) {
	var s C.cu_stream
	err := c.do(device, "cuStreamCreate", func() C.cu_res { return C.cu_stream_create(c.t, &s, cuStreamNonBlocking) })
	return unsafe.Pointer(s), err
}

func (c *cudaBackend) destroyStream(s unsafe.Pointer, device int) error {
	return c.do(device, "cuStreamDestroy_v2", func() C.cu_res { return C.cu_stream_destroy(c.t, C.cu_stream(s)) })
}

func (c *cudaBackend) syncStream(s unsafe.Pointer, device int) error {
	return c.do(device, "cuStreamSynchronize", func() C.cu_res { return C.cu_stream_synchronize(c.t, C.cu_stream(s)) })
}

func (c *cudaBackend) copyD2H(s unsafe.Pointer, device int, dst unsafe.Pointer, src uintptr, n uint64) error {
	return c.do(device, "cuMemcpyDtoHAsync_v2", func() C.cu_res {
		return C.cu_memcpy_dtoh_async(c.t, dst, C.cu_dptr(src), C.size_t(n), C.cu_stream(s))
	})
}

func (c *cudaBackend) copyH2D(s unsafe.Pointer, device int, dst uintptr, src unsafe.Pointer, n uint64) error {
	return c.do(device, "cuMemcpyHtoDAsync_v2", func() C.cu_res {
		return C.cu_memcpy_htod_async(c.t, C.cu_dptr(dst), src, C.size_t(n), C.cu_stream(s))
	})
}

func (c *cudaBackend) copyD2D(s unsafe.Pointer, device int, dst, src uintptr, n uint64) error {
	return c.do(device, "cuMemcpyDtoDAsync_v2", func() C.cu_res {
		return C.cu_memcpy_dtod_async(c.t, C.cu_dptr(dst), C.cu_dptr(src), C.size_t(n), C.cu_stream(s))
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

func (c *cudaBackend) dmabuf(ptr uintptr, size uint64, device int) (int, error) {
	if _, err := c.context(device); err != nil {
		return -1, err
	}
	var ok C.int
	switch r := C.cu_device_get_attribute(c.t, &ok, cuDevAttrDmaBufSupport, C.int(device)); {
	case r == C.cu_missing: // old driver: let cuMemGetHandleForAddressRange decide
	case r != cuSuccess:
		return -1, c.err("cuDeviceGetAttribute(DMA_BUF_SUPPORTED)", r)
	case ok == 0:
		return -1, fmt.Errorf("%w: device %d does not support dma-buf (CU_DEVICE_ATTRIBUTE_DMA_BUF_SUPPORTED is 0)", ErrNotSupported, device)
	}
	fd := C.int(-1)
	err := c.do(device, "cuMemGetHandleForAddressRange", func() C.cu_res {
		return C.cu_mem_get_handle_for_address_range(c.t, &fd, C.cu_dptr(ptr), C.size_t(size), cuRangeHandleTypeDmaBuf, 0)
	})
	return int(fd), err
}

func (c *cudaBackend) pciBusID(device int) (string, error) {
	if _, err := c.context(device); err != nil { // cuDeviceGet of the ordinal, cuInit done
		return "", err
	}
	var buf [64]C.char
	if r := C.cu_device_get_pci_bus_id(c.t, &buf[0], C.int(len(buf)), c.dev[device]); r != cuSuccess {
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
