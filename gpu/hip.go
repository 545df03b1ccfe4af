package gpu

/*
#include <dlfcn.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

// The few HIP runtime types used here, declared without hip_runtime_api.h.
typedef int hip_res;                                            // hipError_t
typedef struct { unsigned char reserved[64]; } hip_ipc_handle;  // hipIpcMemHandle_t

// hip_missing is returned by a trampoline whose optional symbol the
// runtime lacks.
#define hip_missing (-1)

typedef struct {
	hip_res (*init)(unsigned int);
	hip_res (*getDeviceCount)(int *);
	hip_res (*getDevice)(int *);
	hip_res (*setDevice)(int);
	hip_res (*runtimeGetVersion)(int *);
	hip_res (*pointerGetAttribute)(void *, int, void *);
	hip_res (*memGetAddressRange)(void **, size_t *, void *);
	hip_res (*mallocDevice)(void **, size_t);
	hip_res (*freeDevice)(void *);
	hip_res (*hostMalloc)(void **, size_t, unsigned int);
	hip_res (*hostFree)(void *);
	hip_res (*streamCreateWithFlags)(void **, unsigned int);
	hip_res (*streamDestroy)(void *);
	hip_res (*eventCreateWithFlags)(void **, unsigned int);
	hip_res (*eventRecord)(void *, void *);
	hip_res (*eventQuery)(void *);
	hip_res (*eventDestroy)(void *);
	hip_res (*memcpyAsync)(void *, const void *, size_t, int, void *);
	hip_res (*ipcGetMemHandle)(hip_ipc_handle *, void *);
	hip_res (*ipcOpenMemHandle)(void **, hip_ipc_handle, unsigned int);
	hip_res (*ipcCloseMemHandle)(void *);
	hip_res (*memGetHandleForAddressRange)(void *, void *, size_t, int, unsigned long long);
	const char *(*getErrorString)(hip_res);
	hip_res (*deviceGetPCIBusId)(char *, int, int);
	int (*hsaExportDmabuf)(const void *, size_t, int *, uint64_t *); // hsa_amd_portable_export_dmabuf, ROCr
} hip_table;

typedef struct {
	const char *name;
	size_t off;
	int required;
} hip_sym;

// hip_load fills t from lib. It returns NULL, or the name of the first
// required symbol that lib lacks.
static const char *hip_load(void *lib, hip_table *t) {
	static const hip_sym syms[] = {
		{"hipInit", offsetof(hip_table, init), 1},
		{"hipGetDeviceCount", offsetof(hip_table, getDeviceCount), 1},
		{"hipGetDevice", offsetof(hip_table, getDevice), 1},
		{"hipSetDevice", offsetof(hip_table, setDevice), 1},
		{"hipRuntimeGetVersion", offsetof(hip_table, runtimeGetVersion), 1},
		{"hipPointerGetAttribute", offsetof(hip_table, pointerGetAttribute), 1},
		{"hipMemGetAddressRange", offsetof(hip_table, memGetAddressRange), 1},
		{"hipMalloc", offsetof(hip_table, mallocDevice), 1},
		{"hipFree", offsetof(hip_table, freeDevice), 1},
		{"hipHostMalloc", offsetof(hip_table, hostMalloc), 1},
		{"hipHostFree", offsetof(hip_table, hostFree), 1},
		{"hipStreamCreateWithFlags", offsetof(hip_table, streamCreateWithFlags), 1},
		{"hipStreamDestroy", offsetof(hip_table, streamDestroy), 1},
		{"hipEventCreateWithFlags", offsetof(hip_table, eventCreateWithFlags), 1},
		{"hipEventRecord", offsetof(hip_table, eventRecord), 1},
		{"hipEventQuery", offsetof(hip_table, eventQuery), 1},
		{"hipEventDestroy", offsetof(hip_table, eventDestroy), 1},
		{"hipMemcpyAsync", offsetof(hip_table, memcpyAsync), 1},
		{"hipIpcGetMemHandle", offsetof(hip_table, ipcGetMemHandle), 1},
		{"hipIpcOpenMemHandle", offsetof(hip_table, ipcOpenMemHandle), 1},
		{"hipIpcCloseMemHandle", offsetof(hip_table, ipcCloseMemHandle), 1},
		{"hipMemGetHandleForAddressRange", offsetof(hip_table, memGetHandleForAddressRange), 0},
		{"hipGetErrorString", offsetof(hip_table, getErrorString), 1},
		{"hipDeviceGetPCIBusId", offsetof(hip_table, deviceGetPCIBusId), 0},
		// dlsym through the runtime's handle also searches what it links:
		// ROCr (libhsa-runtime64).
		{"hsa_amd_portable_export_dmabuf", offsetof(hip_table, hsaExportDmabuf), 0},
	};
	for (size_t i = 0; i < sizeof syms / sizeof syms[0]; i++) {
		void *p = dlsym(lib, syms[i].name);
		if (p == NULL && syms[i].required) return syms[i].name;
		memcpy((char *)t + syms[i].off, &p, sizeof p);
	}
	return NULL;
}

// One trampoline per function pointer: cgo cannot call C function pointers.
// Device pointers cross as uintptr_t so that Go never turns an integer
// into an unsafe.Pointer.
static hip_res hip_init(hip_table *t, unsigned int flags) { return t->init(flags); }
static hip_res hip_device_get_pci_bus_id(hip_table *t, char *id, int n, int d) {
	return t->deviceGetPCIBusId ? t->deviceGetPCIBusId(id, n, d) : hip_missing;
}
static hip_res hip_get_device_count(hip_table *t, int *n) { return t->getDeviceCount(n); }
static hip_res hip_get_device(hip_table *t, int *d) { return t->getDevice(d); }
static hip_res hip_set_device(hip_table *t, int d) { return t->setDevice(d); }
static hip_res hip_runtime_get_version(hip_table *t, int *v) { return t->runtimeGetVersion(v); }
static hip_res hip_pointer_get_attribute(hip_table *t, void *data, int attr, uintptr_t p) {
	return t->pointerGetAttribute(data, attr, (void *)p);
}
static hip_res hip_mem_get_address_range(hip_table *t, uintptr_t *base, size_t *size, uintptr_t p) {
	void *b = NULL;
	hip_res r = t->memGetAddressRange(&b, size, (void *)p);
	*base = (uintptr_t)b;
	return r;
}
static hip_res hip_malloc(hip_table *t, uintptr_t *p, size_t n) {
	void *q = NULL;
	hip_res r = t->mallocDevice(&q, n);
	*p = (uintptr_t)q;
	return r;
}
static hip_res hip_free(hip_table *t, uintptr_t p) { return t->freeDevice((void *)p); }
static hip_res hip_host_malloc(hip_table *t, void **p, size_t n, unsigned int flags) { return t->hostMalloc(p, n, flags); }
static hip_res hip_host_free(hip_table *t, void *p) { return t->hostFree(p); }
static hip_res hip_stream_create_with_flags(hip_table *t, void **s, unsigned int flags) {
	return t->streamCreateWithFlags(s, flags);
}
static hip_res hip_stream_destroy(hip_table *t, void *s) { return t->streamDestroy(s); }
static hip_res hip_event_create(hip_table *t, void **e, unsigned int flags) { return t->eventCreateWithFlags(e, flags); }
static hip_res hip_event_record(hip_table *t, void *e, void *s) { return t->eventRecord(e, s); }
static hip_res hip_event_query(hip_table *t, void *e) { return t->eventQuery(e); }
static hip_res hip_event_destroy(hip_table *t, void *e) { return t->eventDestroy(e); }
// hsa_export_dmabuf returns hsa_status_t (0: success), or hip_missing.
static int hsa_export_dmabuf(hip_table *t, uintptr_t p, size_t n, int *fd, uint64_t *off) {
	return t->hsaExportDmabuf ? t->hsaExportDmabuf((const void *)p, n, fd, off) : hip_missing;
}
static hip_res hip_memcpy_d2h_async(hip_table *t, void *dst, uintptr_t src, size_t n, void *s) {
	return t->memcpyAsync(dst, (const void *)src, n, 2, s); // hipMemcpyDeviceToHost
}
static hip_res hip_memcpy_h2d_async(hip_table *t, uintptr_t dst, const void *src, size_t n, void *s) {
	return t->memcpyAsync((void *)dst, src, n, 1, s); // hipMemcpyHostToDevice
}
static hip_res hip_memcpy_d2d_async(hip_table *t, uintptr_t dst, uintptr_t src, size_t n, void *s) {
	return t->memcpyAsync((void *)dst, (const void *)src, n, 3, s); // hipMemcpyDeviceToDevice
}
static hip_res hip_ipc_get_mem_handle(hip_table *t, hip_ipc_handle *h, uintptr_t p) {
	return t->ipcGetMemHandle(h, (void *)p);
}
static hip_res hip_ipc_open_mem_handle(hip_table *t, uintptr_t *p, const hip_ipc_handle *h, unsigned int flags) {
	void *q = NULL;
	hip_res r = t->ipcOpenMemHandle(&q, *h, flags);
	*p = (uintptr_t)q;
	return r;
}
static hip_res hip_ipc_close_mem_handle(hip_table *t, uintptr_t p) { return t->ipcCloseMemHandle((void *)p); }
static hip_res hip_mem_get_handle_for_address_range(hip_table *t, int *fd, uintptr_t p, size_t n, int type,
                                                    unsigned long long flags) {
	return t->memGetHandleForAddressRange ? t->memGetHandleForAddressRange(fd, (void *)p, n, type, flags)
	                                      : hip_missing;
}
static const char *hip_get_error_string(hip_table *t, hip_res r) { return t->getErrorString(r); }
*/
import "C"

import (
	"errors"
	"fmt"
	"log/slog"
	"runtime"
	"unsafe"
)

// HIP constants (hip_runtime_api.h).
const (
	hipSuccess               = 0
	hipErrorInvalidValue     = 1
	hipErrorNoDevice         = 100
	hipErrorNotFound         = 500
	hipErrorNotReady         = 600
	hipAttrMemoryType        = 2  // HIP_POINTER_ATTRIBUTE_MEMORY_TYPE
	hipAttrDeviceOrdinal     = 9  // HIP_POINTER_ATTRIBUTE_DEVICE_ORDINAL
	hipAttrLegacyIPC         = 10 // HIP_POINTER_ATTRIBUTE_IS_LEGACY_HIP_IPC_CAPABLE
	hipEventDisableTiming    = 2  // hipEventDisableTiming
	hipStreamNonBlocking     = 1  // hipStreamNonBlocking
	hipHostMallocPortable    = 1  // hipHostMallocPortable
	hipIpcLazyPeerAccess     = 1  // hipIpcMemLazyEnablePeerAccess, the only flag hipIpcOpenMemHandle accepts
	hipRangeHandleTypeDmaBuf = 1  // hipMemRangeHandleTypeDmaBufFd
	// hipMemoryTypeDevice was 1 before ROCm 6.0 and is 2 since (the enum
	// gained hipMemoryTypeUnregistered = 0).
	hipMemoryTypeDeviceV5 = 1
	hipMemoryTypeDeviceV6 = 2
	hipVersion6           = 60000000 // HIP_VERSION of ROCm 6.0: major*1e7 + minor*1e5 + patch
)

// hipBackend drives AMD GPUs through the HIP runtime. HIP keeps a current
// device per thread; do switches to the wanted device and back.
//
// Allocation ranges come from hipMemGetAddressRange rather than
// HIP_POINTER_ATTRIBUTE_RANGE_SIZE, which ROCm writes as 32 bits.
type hipBackend struct {
	t          *C.hip_table // C memory
	ndev       int
	memTypeDev C.uint // hipMemoryTypeDevice of this runtime's enum
	log        *slog.Logger
	fatal      stickyState
}

func newHIP(lib *library, log *slog.Logger) (*hipBackend, error) {
	t := (*C.hip_table)(C.calloc(1, C.size_t(unsafe.Sizeof(C.hip_table{}))))
	if t == nil {
		return nil, fmt.Errorf("gpu: out of memory")
	}
	h := &hipBackend{t: t, log: log}
	if missing := C.hip_load(lib.handle, t); missing != nil {
		C.free(unsafe.Pointer(t))
		return nil, fmt.Errorf("%w: %s has no %s", ErrNotSupported, lib.name, C.GoString(missing))
	}
	if r := C.hip_init(t, 0); r != hipSuccess {
		err := h.err("hipInit", r)
		C.free(unsafe.Pointer(t))
		if r == hipErrorNoDevice {
			return nil, fmt.Errorf("%w: %w", ErrNotSupported, err)
		}
		return nil, err
	}
	var n, version C.int
	if r := C.hip_get_device_count(t, &n); r != hipSuccess {
		C.free(unsafe.Pointer(t))
		return nil, h.err("hipGetDeviceCount", r)
	}
	if r := C.hip_runtime_get_version(t, &version); r != hipSuccess {
		C.free(unsafe.Pointer(t))
		return nil, h.err("hipRuntimeGetVersion", r)
	}
	h.ndev = int(n)
	h.memTypeDev = hipMemoryTypeDeviceV6
	if version < hipVersion6 {
		h.memTypeDev = hipMemoryTypeDeviceV5
	}
	log.Debug("gpu: HIP runtime", "version", int(version))
	return h, nil
}

func (h *hipBackend) err(op string, r C.hip_res) error {
	if r == hipSuccess {
		return nil
	}
	if r == C.hip_missing {
		return missingSymbol(op)
	}
	msg := "unknown error"
	if s := C.hip_get_error_string(h.t, r); s != nil {
		msg = C.GoString(s)
	}
	return h.fatal.note(&driverError{op: op, code: int(r), msg: msg})
}

func (h *hipBackend) deviceCount() int { return h.ndev }

// do runs f with device current on the calling OS thread and makes the
// thread's previous device current again afterwards.
func (h *hipBackend) do(device int, op string, f func() C.hip_res) error {
	if device < 0 || device >= h.ndev {
		return errNoDevice(device, h.ndev)
	}
	if err := h.fatal.check(); err != nil {
		return err
	}
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	var old C.int
	if r := C.hip_get_device(h.t, &old); r != hipSuccess {
		return h.err("hipGetDevice", r)
	}
	if int(old) != device {
		if r := C.hip_set_device(h.t, C.int(device)); r != hipSuccess {
			return h.err("hipSetDevice", r)
		}
		defer C.hip_set_device(h.t, old)
	}
	return h.err(op, f())
}

// pointerInfo asks about ptr; HIP needs no device for it (hint unused).
func (h *hipBackend) pointerInfo(ptr uintptr, hint int) (PointerInfo, error) {
	if err := h.fatal.check(); err != nil {
		return PointerInfo{}, err
	}
	host := PointerInfo{Device: -1}
	var base C.uintptr_t
	var size C.size_t
	switch r := C.hip_mem_get_address_range(h.t, &base, &size, C.uintptr_t(ptr)); r {
	case hipSuccess:
	case hipErrorNotFound, hipErrorInvalidValue: // not a HIP allocation: plain host memory
		return host, nil
	default:
		return PointerInfo{}, h.err("hipMemGetAddressRange", r)
	}
	var memType C.uint
	switch r := C.hip_pointer_get_attribute(h.t, unsafe.Pointer(&memType), hipAttrMemoryType, C.uintptr_t(ptr)); r {
	case hipSuccess:
	case hipErrorInvalidValue:
		return host, nil
	default:
		return PointerInfo{}, h.err("hipPointerGetAttribute(MEMORY_TYPE)", r)
	}
	if memType != h.memTypeDev { // hipHostMalloc'd or registered host memory
		return host, nil
	}
	var ord C.int
	if r := C.hip_pointer_get_attribute(h.t, unsafe.Pointer(&ord), hipAttrDeviceOrdinal, C.uintptr_t(ptr)); r != hipSuccess {
		return PointerInfo{}, h.err("hipPointerGetAttribute(DEVICE_ORDINAL)", r)
	}
	// As with CUDA, memory legacy IPC cannot share is VMM memory; runtimes
	// without the attribute are taken to have none.
	var legacy C.int
	vmm := C.hip_pointer_get_attribute(h.t, unsafe.Pointer(&legacy), hipAttrLegacyIPC, C.uintptr_t(ptr)) == hipSuccess && legacy == 0
	return PointerInfo{IsDevice: true, Device: int(ord), AllocBase: uintptr(base), AllocSize: uint64(size), VMM: vmm}, nil
}

func (h *hipBackend) allocDevice(n uint64, device int) (uintptr, error) {
	var p C.uintptr_t
	err := h.do(device, "hipMalloc", func() C.hip_res { return C.hip_malloc(h.t, &p, C.size_t(n)) })
	return uintptr(p), err
}

func (h *hipBackend) freeDevice(ptr uintptr, device int) error {
	return h.do(device, "hipFree", func() C.hip_res { return C.hip_free(h.t, C.uintptr_t(ptr)) })
}

// allocHost needs no device: hipHostMalloc'd memory is portable.
func (h *hipBackend) allocHost(n int, _ int) (unsafe.Pointer, error) {
	if err := h.fatal.check(); err != nil {
		return nil, err
	}
	var p unsafe.Pointer
	r := C.hip_host_malloc(h.t, &p, C.size_t(n), hipHostMallocPortable)
	return p, h.err("hipHostMalloc", r)
}

func (h *hipBackend) freeHost(p unsafe.Pointer, _ int) error {
	return h.err("hipHostFree", C.hip_host_free(h.t, p))
}

func (h *hipBackend) newStream(device int) (stream, error) {
	var s, e unsafe.Pointer
	err := h.do(device, "hipStreamCreateWithFlags", func() C.hip_res {
		return C.hip_stream_create_with_flags(h.t, &s, hipStreamNonBlocking)
	})
	if err != nil {
		return stream{}, err
	}
	err = h.do(device, "hipEventCreateWithFlags", func() C.hip_res { return C.hip_event_create(h.t, &e, hipEventDisableTiming) })
	if err != nil {
		_ = h.do(device, "hipStreamDestroy", func() C.hip_res { return C.hip_stream_destroy(h.t, s) })
		return stream{}, err
	}
	return stream{h: s, done: e}, nil
}

func (h *hipBackend) destroyStream(s stream, device int) error {
	return errors.Join(
		h.do(device, "hipEventDestroy", func() C.hip_res { return C.hip_event_destroy(h.t, s.done) }),
		h.do(device, "hipStreamDestroy", func() C.hip_res { return C.hip_stream_destroy(h.t, s.h) }))
}

func (h *hipBackend) recordDone(s stream, device int) error {
	return h.do(device, "hipEventRecord", func() C.hip_res { return C.hip_event_record(h.t, s.done, s.h) })
}

func (h *hipBackend) queryDone(s stream) (bool, error) {
	if err := h.fatal.check(); err != nil {
		return false, err
	}
	switch r := C.hip_event_query(h.t, s.done); r {
	case hipSuccess:
		return true, nil
	case hipErrorNotReady:
		return false, nil
	default:
		return false, h.err("hipEventQuery", r)
	}
}

func (h *hipBackend) copyD2H(s stream, device int, dst unsafe.Pointer, src uintptr, n uint64) error {
	return h.do(device, "hipMemcpyAsync(DeviceToHost)", func() C.hip_res {
		return C.hip_memcpy_d2h_async(h.t, dst, C.uintptr_t(src), C.size_t(n), s.h)
	})
}

func (h *hipBackend) copyH2D(s stream, device int, dst uintptr, src unsafe.Pointer, n uint64) error {
	return h.do(device, "hipMemcpyAsync(HostToDevice)", func() C.hip_res {
		return C.hip_memcpy_h2d_async(h.t, C.uintptr_t(dst), src, C.size_t(n), s.h)
	})
}

func (h *hipBackend) copyD2D(s stream, device int, dst, src uintptr, n uint64) error {
	return h.do(device, "hipMemcpyAsync(DeviceToDevice)", func() C.hip_res {
		return C.hip_memcpy_d2d_async(h.t, C.uintptr_t(dst), C.uintptr_t(src), C.size_t(n), s.h)
	})
}

func (h *hipBackend) ipcGet(ptr uintptr, device int) (IPCHandle, error) {
	var hd IPCHandle
	err := h.do(device, "hipIpcGetMemHandle", func() C.hip_res {
		return C.hip_ipc_get_mem_handle(h.t, (*C.hip_ipc_handle)(unsafe.Pointer(&hd)), C.uintptr_t(ptr))
	})
	return hd, err
}

func (h *hipBackend) ipcOpen(hd *IPCHandle, device int) (uintptr, error) {
	var p C.uintptr_t
	err := h.do(device, "hipIpcOpenMemHandle", func() C.hip_res {
		return C.hip_ipc_open_mem_handle(h.t, &p, (*C.hip_ipc_handle)(unsafe.Pointer(hd)), hipIpcLazyPeerAccess)
	})
	return uintptr(p), err
}

func (h *hipBackend) ipcClose(ptr uintptr, device int) error {
	return h.do(device, "hipIpcCloseMemHandle", func() C.hip_res { return C.hip_ipc_close_mem_handle(h.t, C.uintptr_t(ptr)) })
}

// dmabuf exports [ptr, ptr+size). HIP's dma-bufs cover the whole
// allocation around the address, whatever range is asked for: ROCr's
// hsa_amd_portable_export_dmabuf says where ptr lies in it, and without it
// that is ptr's offset in its allocation.
func (h *hipBackend) dmabuf(ptr uintptr, size uint64, info PointerInfo) (int, uint64, error) {
	fd := C.int(-1)
	var off C.uint64_t
	var status C.int
	err := h.do(info.Device, "hsa_amd_portable_export_dmabuf", func() C.hip_res {
		status = C.hsa_export_dmabuf(h.t, C.uintptr_t(ptr), C.size_t(size), &fd, &off)
		return hipSuccess
	})
	switch {
	case err != nil:
		return -1, 0, err
	case status == 0:
		return int(fd), uint64(off), nil
	case status != C.hip_missing:
		return -1, 0, fmt.Errorf("gpu: hsa_amd_portable_export_dmabuf(%#x, %d): hsa_status_t %#x", ptr, size, int(status))
	}
	start, end := pageSpan(ptr, size)
	err = h.do(info.Device, "hipMemGetHandleForAddressRange", func() C.hip_res {
		return C.hip_mem_get_handle_for_address_range(h.t, &fd, C.uintptr_t(start), C.size_t(end-start), hipRangeHandleTypeDmaBuf, 0)
	})
	if err != nil {
		return -1, 0, err
	}
	return int(fd), uint64(ptr - info.AllocBase), nil
}

func (h *hipBackend) pciBusID(device int) (string, error) {
	if device < 0 || device >= h.ndev {
		return "", errNoDevice(device, h.ndev)
	}
	var buf [64]C.char
	if r := C.hip_device_get_pci_bus_id(h.t, &buf[0], C.int(len(buf)), C.int(device)); r != hipSuccess {
		return "", h.err("hipDeviceGetPCIBusId", r)
	}
	return C.GoString(&buf[0]), nil
}

func (h *hipBackend) close() error {
	C.free(unsafe.Pointer(h.t))
	h.t = nil
	return nil
}
