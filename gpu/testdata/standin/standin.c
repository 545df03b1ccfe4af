// standin.c: a stand-in GPU driver for the gpu package's tests.
//
// It exports the subset of the CUDA driver API (libcuda.so.1) and of the
// HIP runtime (libamdhip64.so) that package gpu calls, and implements it
// over host memory, so that the Go code can be tested on a machine without
// a GPU. The tests compile it with `gcc -shared -fPIC` and open it with
// gpu.Open(gpu.Options{Library: path, Vendor: ...}).
//
// Model:
//   - NDEV devices. Each has an arena: a memfd of ARENA bytes mapped shared.
//     cuMemAlloc/hipMalloc bump-allocate page-rounded blocks from it, so two
//     allocations made one after the other are adjacent, and the tail of an
//     allocation whose size is not a page multiple belongs to nothing.
//   - A table of records: device allocations, pinned host allocations and
//     IPC mappings. Pointer queries answer from it; an address in no record
//     is unregistered host memory (CUDA_ERROR_INVALID_VALUE, like CUDA).
//   - IPC handles carry the device, arena offset and size of an allocation;
//     opening one maps the arena again at a new address, so the opened
//     pointer aliases the exported memory, as real IPC does. The handle
//     also names the exporting process and its arena's memfd, so that
//     another process (of the same user) opens it through /proc/PID/fd/FD:
//     IPC works across processes too. As in CUDA, a handle cannot be
//     opened again while a mapping of it is open.
//   - Async copies are queued on their stream and run only at
//     cuStreamSynchronize/hipStreamSynchronize (or stream destroy). Code that
//     reads a buffer before synchronizing, or refills a staging buffer while
//     its copy is still queued, sees wrong bytes.
//   - CUDA calls that need a context fail with CUDA_ERROR_INVALID_CONTEXT
//     when none is current on the calling thread; the per-thread context
//     stack is small, so leaked pushes show up as errors.
//   - Copies whose device side is not inside one live record fail with
//     CUDA_ERROR_INVALID_VALUE / hipErrorInvalidValue.
//
// Build variants: -DSTANDIN_NO_DEVICE makes cuInit/hipInit report no
// device (error 100); -DSTANDIN_NO_DMABUF leaves out the dma-buf export
// functions, as an old driver would; -DSTANDIN_STRICT_IPC refuses to open
// handles exported by the same process, as CUDA and HIP do (by default
// the stand-in allows it, so that one test process can play both sides).
#define _GNU_SOURCE
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#define NDEV 2
#ifndef ARENA
#define ARENA ((size_t)64 << 20) // bytes of "device memory" per device
#endif
#define MAXREC 4096
#define CTXDEPTH 4
#define PAGE ((size_t)4096)

// Error codes shared by CUDA and HIP for the cases used here.
enum {
	E_OK = 0,
	E_INVALID_VALUE = 1,
	E_OUT_OF_MEMORY = 2,
	E_NOT_INITIALIZED = 3,
	E_INVALID_DEVICE = 101,
	E_INVALID_CONTEXT = 201,
	E_INVALID_HANDLE = 400,
	E_NOT_FOUND = 500,
	E_NOT_SUPPORTED = 801,
};

enum { K_DEVICE = 1, K_HOST = 2, K_IPC = 3 };

typedef struct {
	uintptr_t base;
	size_t size;   // requested size
	size_t mapped; // page-rounded size (device and IPC records)
	size_t off;    // offset in the device arena
	int device;
	int kind;
	int live;
	int pid; // IPC records: the exporting process
} rec;

typedef struct {
	unsigned char *dst;
	const unsigned char *src;
	size_t n;
} op;

typedef struct {
	int device;
	op *ops;
	size_t nops, cap;
} stream;

typedef struct {
	char magic[8];
	uint64_t off, size;
	int32_t device;
	int32_t pid; // of the exporting process
	int32_t fd;  // its arena memfd, for other processes
	char pad[64 - 8 - 8 - 8 - 4 - 4 - 4];
} ipc_handle;
_Static_assert(sizeof(ipc_handle) == 64, "IPC handles are 64 bytes");

static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static int inited;
static struct {
	int fd;
	unsigned char *base;
	size_t used;
} arena[NDEV];
static rec recs[MAXREC];
static int nrecs;

__attribute__((unused)) static int init_arenas(void) {
	pthread_mutex_lock(&mu);
	int r = E_OK;
	if (!inited) {
		for (int d = 0; d < NDEV; d++) {
			int fd = memfd_create("standin-device", 0);
			if (fd < 0 || ftruncate(fd, (off_t)ARENA) != 0) {
				r = E_OUT_OF_MEMORY;
				break;
			}
			void *p = mmap(NULL, ARENA, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
			if (p == MAP_FAILED) {
				r = E_OUT_OF_MEMORY;
				break;
			}
			arena[d].fd = fd;
			arena[d].base = p;
			arena[d].used = 0;
		}
		if (r == E_OK) inited = 1;
	}
	pthread_mutex_unlock(&mu);
	return r;
}

static size_t page_round(size_t n) { return (n + PAGE - 1) & ~(PAGE - 1); }

// add_rec and find_rec expect mu held.
static int add_rec(rec r) {
	if (nrecs == MAXREC) return E_OUT_OF_MEMORY;
	r.live = 1;
	recs[nrecs++] = r;
	return E_OK;
}

static rec *find_rec(uintptr_t p) {
	for (int i = 0; i < nrecs; i++) {
		rec *r = &recs[i];
		if (r->live && p >= r->base && p - r->base < r->size) return r;
	}
	return NULL;
}

// dev_range reports whether [p, p+n) lies inside one live device or IPC
// record.
static int dev_range(uintptr_t p, size_t n) {
	pthread_mutex_lock(&mu);
	rec *r = find_rec(p);
	int ok = r && r->kind != K_HOST && n <= r->size - (p - r->base);
	pthread_mutex_unlock(&mu);
	return ok;
}

static int dev_alloc(int device, size_t n, uintptr_t *out) {
	if (!inited) return E_NOT_INITIALIZED;
	if (device < 0 || device >= NDEV) return E_INVALID_DEVICE;
	if (n == 0) return E_INVALID_VALUE;
	size_t m = page_round(n);
	pthread_mutex_lock(&mu);
	int r = E_OUT_OF_MEMORY;
	if (arena[device].used + m <= ARENA) {
		rec x = {0};
		x.base = (uintptr_t)(arena[device].base + arena[device].used);
		x.size = n;
		x.mapped = m;
		x.off = arena[device].used;
		x.device = device;
		x.kind = K_DEVICE;
		r = add_rec(x);
		if (r == E_OK) {
			arena[device].used += m;
			*out = x.base;
		}
	}
	pthread_mutex_unlock(&mu);
	return r;
}

// free_rec ends the record whose base is p and whose kind is kind.
static int free_rec(uintptr_t p, int kind) {
	pthread_mutex_lock(&mu);
	int r = E_INVALID_VALUE;
	for (int i = 0; i < nrecs; i++) {
		rec *x = &recs[i];
		if (x->live && x->base == p && x->kind == kind) {
			x->live = 0;
			if (kind == K_HOST) free((void *)p);
			if (kind == K_IPC) munmap((void *)p, x->mapped);
			r = E_OK;
			break;
		}
	}
	pthread_mutex_unlock(&mu);
	return r;
}

static int host_alloc(void **out, size_t n) {
	if (n == 0) return E_INVALID_VALUE;
	void *p = NULL;
	if (posix_memalign(&p, PAGE, n) != 0) return E_OUT_OF_MEMORY;
	rec x = {0};
	x.base = (uintptr_t)p;
	x.size = n;
	x.device = -1;
	x.kind = K_HOST;
	pthread_mutex_lock(&mu);
	int r = add_rec(x);
	pthread_mutex_unlock(&mu);
	if (r != E_OK) {
		free(p);
		return r;
	}
	*out = p;
	return E_OK;
}

// Memory types: CU_MEMORYTYPE_HOST/DEVICE and ROCm 6 hipMemoryTypeHost/Device
// happen to be 1 and 2 in both APIs.
static int ptr_attr(void *data, int attr, uintptr_t p) {
	if (!data) return E_INVALID_VALUE;
	pthread_mutex_lock(&mu);
	rec *r = find_rec(p);
	rec x = r ? *r : (rec){0};
	pthread_mutex_unlock(&mu);
	if (!r) return E_INVALID_VALUE;
	switch (attr) {
	case 2: // MEMORY_TYPE
		*(unsigned int *)data = x.kind == K_HOST ? 1 : 2;
		return E_OK;
	case 9: // DEVICE_ORDINAL
		*(int *)data = x.device;
		return E_OK;
	case 11: // RANGE_START_ADDR
		*(uintptr_t *)data = x.base;
		return E_OK;
	case 12: // RANGE_SIZE
		*(size_t *)data = x.size;
		return E_OK;
	}
	return E_INVALID_VALUE;
}

static int ipc_get(ipc_handle *h, uintptr_t p) {
	if (!h) return E_INVALID_VALUE;
	pthread_mutex_lock(&mu);
	rec *r = find_rec(p);
	int res = E_INVALID_VALUE;
	if (r && r->kind == K_DEVICE) {
		memset(h, 0, sizeof *h);
		memcpy(h->magic, "STANDIN", 8);
		h->off = r->off;
		h->size = r->size;
		h->device = r->device;
		h->pid = (int32_t)getpid();
		h->fd = arena[r->device].fd;
		res = E_OK;
	}
	pthread_mutex_unlock(&mu);
	return res;
}

static int ipc_open(uintptr_t *out, const ipc_handle *h, unsigned int flags) {
	if (!out || flags != 1 || memcmp(h->magic, "STANDIN", 8) != 0) return E_INVALID_VALUE;
	if (h->device < 0 || h->device >= NDEV || h->off + h->size > ARENA) return E_INVALID_VALUE;
#ifdef STANDIN_STRICT_IPC
	if (h->pid == (int32_t)getpid()) return E_INVALID_CONTEXT; // CUDA: "invalid device context"
#endif
	pthread_mutex_lock(&mu);
	int mapped = 0;
	for (int i = 0; i < nrecs; i++) {
		rec *x = &recs[i];
		if (x->live && x->kind == K_IPC && x->pid == h->pid && x->device == h->device && x->off == h->off) mapped = 1;
	}
	pthread_mutex_unlock(&mu);
	if (mapped) return E_INVALID_VALUE; // already mapped in this process
	int fd = arena[h->device].fd, own = h->pid == (int32_t)getpid();
	if (!own) {
		char path[64];
		snprintf(path, sizeof path, "/proc/%d/fd/%d", (int)h->pid, (int)h->fd);
		fd = open(path, O_RDWR);
		if (fd < 0) return E_INVALID_HANDLE;
	}
	size_t m = page_round(h->size);
	void *p = mmap(NULL, m, PROT_READ | PROT_WRITE, MAP_SHARED, fd, (off_t)h->off);
	if (!own) close(fd);
	if (p == MAP_FAILED) return E_OUT_OF_MEMORY;
	rec x = {0};
	x.base = (uintptr_t)p;
	x.size = h->size;
	x.mapped = m;
	x.off = h->off;
	x.device = h->device;
	x.kind = K_IPC;
	x.pid = h->pid;
	pthread_mutex_lock(&mu);
	int r = add_rec(x);
	pthread_mutex_unlock(&mu);
	if (r != E_OK) {
		munmap(p, m);
		return r;
	}
	*out = x.base;
	return E_OK;
}

__attribute__((unused)) static int dmabuf(void *handle, uintptr_t p, size_t size, int type) {
	if (!handle || type != 1 || p % PAGE != 0 || size % PAGE != 0 || size == 0) return E_INVALID_VALUE;
	pthread_mutex_lock(&mu);
	rec *r = find_rec(p);
	int res = E_INVALID_VALUE;
	if (r && r->kind != K_HOST && size <= r->mapped - (p - r->base)) {
		int fd = dup(arena[r->device].fd);
		if (fd >= 0) {
			*(int *)handle = fd;
			res = E_OK;
		} else {
			res = E_OUT_OF_MEMORY;
		}
	}
	pthread_mutex_unlock(&mu);
	return res;
}

static int stream_new(void **out, int device) {
	if (!out) return E_INVALID_VALUE;
	stream *s = calloc(1, sizeof *s);
	if (!s) return E_OUT_OF_MEMORY;
	s->device = device;
	*out = s;
	return E_OK;
}

static int stream_push(stream *s, void *dst, const void *src, size_t n) {
	if (!s) return E_INVALID_HANDLE;
	if (s->nops == s->cap) {
		size_t c = s->cap ? 2 * s->cap : 8;
		op *o = realloc(s->ops, c * sizeof *o);
		if (!o) return E_OUT_OF_MEMORY;
		s->ops = o;
		s->cap = c;
	}
	s->ops[s->nops++] = (op){dst, src, n};
	return E_OK;
}

static int stream_sync(stream *s) {
	if (!s) return E_INVALID_HANDLE;
	for (size_t i = 0; i < s->nops; i++) memmove(s->ops[i].dst, s->ops[i].src, s->ops[i].n);
	s->nops = 0;
	return E_OK;
}

static int stream_destroy(stream *s) {
	int r = stream_sync(s);
	if (r != E_OK) return r;
	free(s->ops);
	free(s);
	return E_OK;
}

static const char *err_string(int code) {
	switch (code) {
	case E_OK: return "no error";
	case E_INVALID_VALUE: return "invalid argument";
	case E_OUT_OF_MEMORY: return "out of memory";
	case E_NOT_INITIALIZED: return "initialization error";
	case E_INVALID_DEVICE: return "invalid device ordinal";
	case E_INVALID_CONTEXT: return "invalid device context";
	case E_INVALID_HANDLE: return "invalid resource handle";
	case E_NOT_FOUND: return "named symbol not found";
	case E_NOT_SUPPORTED: return "operation not supported";
	}
	return NULL;
}

// ---------------------------------------------------------------- CUDA

typedef unsigned long long CUdeviceptr;

static int ctx_objs[NDEV];
static int ctx_refs[NDEV];
static __thread int ctx_stack[CTXDEPTH];
static __thread int ctx_depth;

// cur_dev is the device of the context current on this thread, or -1.
static int cur_dev(void) { return ctx_depth ? ctx_stack[ctx_depth - 1] : -1; }

#ifdef STANDIN_NO_DEVICE
#define E_NO_DEVICE 100
int cuInit(unsigned int flags) { return flags ? E_INVALID_VALUE : E_NO_DEVICE; }
#else
int cuInit(unsigned int flags) { return flags ? E_INVALID_VALUE : init_arenas(); }
#endif

int cuDeviceGetCount(int *n) {
	if (!inited) return E_NOT_INITIALIZED;
	*n = NDEV;
	return E_OK;
}

int cuDeviceGet(int *d, int ordinal) {
	if (!inited) return E_NOT_INITIALIZED;
	if (ordinal < 0 || ordinal >= NDEV) return E_INVALID_DEVICE;
	*d = ordinal;
	return E_OK;
}

int cuDeviceGetAttribute(int *v, int attr, int d) {
	if (d < 0 || d >= NDEV) return E_INVALID_DEVICE;
	*v = attr == 124 ? 1 : 0; // CU_DEVICE_ATTRIBUTE_DMA_BUF_SUPPORTED
	return E_OK;
}

int cuDevicePrimaryCtxRetain(void **ctx, int d) {
	if (!inited) return E_NOT_INITIALIZED;
	if (d < 0 || d >= NDEV) return E_INVALID_DEVICE;
	pthread_mutex_lock(&mu);
	ctx_refs[d]++;
	pthread_mutex_unlock(&mu);
	*ctx = &ctx_objs[d];
	return E_OK;
}

int cuDevicePrimaryCtxRelease_v2(int d) {
	if (d < 0 || d >= NDEV) return E_INVALID_DEVICE;
	pthread_mutex_lock(&mu);
	int r = ctx_refs[d] > 0 ? E_OK : E_INVALID_CONTEXT;
	if (r == E_OK) ctx_refs[d]--;
	pthread_mutex_unlock(&mu);
	return r;
}

int cuCtxPushCurrent_v2(void *ctx) {
	int *c = ctx;
	if (c < &ctx_objs[0] || c >= &ctx_objs[NDEV]) return E_INVALID_CONTEXT;
	if (ctx_depth == CTXDEPTH) return E_INVALID_CONTEXT; // pushes leaked
	ctx_stack[ctx_depth++] = (int)(c - ctx_objs);
	return E_OK;
}

int cuCtxPopCurrent_v2(void **ctx) {
	if (ctx_depth == 0) return E_INVALID_CONTEXT;
	int d = ctx_stack[--ctx_depth];
	if (ctx) *ctx = &ctx_objs[d];
	return E_OK;
}

int cuPointerGetAttribute(void *data, int attr, CUdeviceptr p) { return ptr_attr(data, attr, (uintptr_t)p); }

int cuMemAlloc_v2(CUdeviceptr *out, size_t n) {
	if (cur_dev() < 0) return E_INVALID_CONTEXT;
	uintptr_t p = 0;
	int r = dev_alloc(cur_dev(), n, &p);
	if (r == E_OK) *out = p;
	return r;
}

int cuMemFree_v2(CUdeviceptr p) {
	if (cur_dev() < 0) return E_INVALID_CONTEXT;
	return free_rec((uintptr_t)p, K_DEVICE);
}

int cuMemHostAlloc(void **out, size_t n, unsigned int flags) {
	(void)flags;
	if (cur_dev() < 0) return E_INVALID_CONTEXT;
	return host_alloc(out, n);
}

int cuMemFreeHost(void *p) {
	if (cur_dev() < 0) return E_INVALID_CONTEXT;
	return free_rec((uintptr_t)p, K_HOST);
}

int cuStreamCreate(void **s, unsigned int flags) {
	(void)flags;
	if (cur_dev() < 0) return E_INVALID_CONTEXT;
	return stream_new(s, cur_dev());
}

// cu_stream checks that s belongs to the current context.
static stream *cu_stream(void *s) {
	stream *st = s;
	return st && st->device == cur_dev() ? st : NULL;
}

int cuStreamSynchronize(void *s) {
	if (cur_dev() < 0) return E_INVALID_CONTEXT;
	return stream_sync(cu_stream(s));
}

int cuStreamDestroy_v2(void *s) {
	if (cur_dev() < 0) return E_INVALID_CONTEXT;
	if (!cu_stream(s)) return E_INVALID_HANDLE;
	return stream_destroy(s);
}

int cuMemcpyDtoHAsync_v2(void *dst, CUdeviceptr src, size_t n, void *s) {
	if (cur_dev() < 0) return E_INVALID_CONTEXT;
	if (!dst || !dev_range(src, n)) return E_INVALID_VALUE;
	return stream_push(cu_stream(s), dst, (const void *)(uintptr_t)src, n);
}

int cuMemcpyHtoDAsync_v2(CUdeviceptr dst, const void *src, size_t n, void *s) {
	if (cur_dev() < 0) return E_INVALID_CONTEXT;
	if (!src || !dev_range(dst, n)) return E_INVALID_VALUE;
	return stream_push(cu_stream(s), (void *)(uintptr_t)dst, src, n);
}

int cuMemcpyDtoDAsync_v2(CUdeviceptr dst, CUdeviceptr src, size_t n, void *s) {
	if (cur_dev() < 0) return E_INVALID_CONTEXT;
	if (!dev_range(dst, n) || !dev_range(src, n)) return E_INVALID_VALUE;
	return stream_push(cu_stream(s), (void *)(uintptr_t)dst, (const void *)(uintptr_t)src, n);
}

int cuIpcGetMemHandle(ipc_handle *h, CUdeviceptr p) {
	if (cur_dev() < 0) return E_INVALID_CONTEXT;
	return ipc_get(h, (uintptr_t)p);
}

int cuIpcOpenMemHandle_v2(CUdeviceptr *out, ipc_handle h, unsigned int flags) {
	if (cur_dev() < 0) return E_INVALID_CONTEXT;
	uintptr_t p = 0;
	int r = ipc_open(&p, &h, flags);
	if (r == E_OK) *out = p;
	return r;
}

int cuIpcCloseMemHandle(CUdeviceptr p) {
	if (cur_dev() < 0) return E_INVALID_CONTEXT;
	return free_rec((uintptr_t)p, K_IPC);
}

#ifndef STANDIN_NO_DMABUF
int cuMemGetHandleForAddressRange(void *handle, CUdeviceptr p, size_t size, int type, unsigned long long flags) {
	if (cur_dev() < 0) return E_INVALID_CONTEXT;
	if (flags) return E_INVALID_VALUE;
	return dmabuf(handle, (uintptr_t)p, size, type);
}
#endif

// pci_bus_id writes device d's made-up PCI address.
static int pci_bus_id(char *id, int n, int d) {
	if (d < 0 || d >= NDEV) return E_INVALID_DEVICE;
	if (!id || n < 13) return E_INVALID_VALUE;
	snprintf(id, (size_t)n, "0000:%02X:00.0", 0x3b + d);
	return E_OK;
}

int cuDeviceGetPCIBusId(char *id, int n, int d) { return inited ? pci_bus_id(id, n, d) : E_NOT_INITIALIZED; }

int cuGetErrorString(int code, const char **s) {
	*s = err_string(code);
	return *s ? E_OK : E_INVALID_VALUE;
}

int cuGetErrorName(int code, const char **s) {
	*s = err_string(code) ? "CUDA_ERROR_STANDIN" : NULL;
	return *s ? E_OK : E_INVALID_VALUE;
}

// ---------------------------------------------------------------- HIP

static __thread int hip_dev;

#ifdef STANDIN_NO_DEVICE
int hipInit(unsigned int flags) { return flags ? E_INVALID_VALUE : E_NO_DEVICE; }
#else
int hipInit(unsigned int flags) { return flags ? E_INVALID_VALUE : init_arenas(); }
#endif

int hipGetDeviceCount(int *n) {
	if (!inited) return E_NOT_INITIALIZED;
	*n = NDEV;
	return E_OK;
}

int hipGetDevice(int *d) {
	*d = hip_dev;
	return E_OK;
}

int hipSetDevice(int d) {
	if (d < 0 || d >= NDEV) return E_INVALID_DEVICE;
	hip_dev = d;
	return E_OK;
}

int hipRuntimeGetVersion(int *v) {
	*v = 60400000; // ROCm 6.4: hipMemoryTypeHost = 1, hipMemoryTypeDevice = 2
	return E_OK;
}

int hipPointerGetAttribute(void *data, int attr, void *p) {
	if (!p) return E_INVALID_VALUE;
	if (attr == 12) return E_NOT_SUPPORTED; // the real one writes 32 bits here; gpu must not ask
	return ptr_attr(data, attr, (uintptr_t)p);
}

int hipMemGetAddressRange(void **base, size_t *size, void *p) {
	pthread_mutex_lock(&mu);
	rec *r = find_rec((uintptr_t)p);
	int res = E_NOT_FOUND;
	if (r) {
		*base = (void *)r->base;
		*size = r->size;
		res = E_OK;
	}
	pthread_mutex_unlock(&mu);
	return res;
}

int hipMalloc(void **out, size_t n) {
	uintptr_t p = 0;
	int r = dev_alloc(hip_dev, n, &p);
	if (r == E_OK) *out = (void *)p;
	return r;
}

int hipFree(void *p) { return p ? free_rec((uintptr_t)p, K_DEVICE) : E_OK; }

int hipHostMalloc(void **out, size_t n, unsigned int flags) {
	(void)flags;
	return host_alloc(out, n);
}

int hipHostFree(void *p) { return p ? free_rec((uintptr_t)p, K_HOST) : E_OK; }

int hipStreamCreateWithFlags(void **s, unsigned int flags) {
	(void)flags;
	return stream_new(s, hip_dev);
}

int hipStreamSynchronize(void *s) { return stream_sync(s); }

int hipStreamDestroy(void *s) { return s ? stream_destroy(s) : E_INVALID_HANDLE; }

// hipMemcpyKind: 1 host to device, 2 device to host, 3 device to device.
int hipMemcpyAsync(void *dst, const void *src, size_t n, int kind, void *s) {
	int srcdev = kind == 2 || kind == 3, dstdev = kind == 1 || kind == 3;
	if (kind < 1 || kind > 3 || !dst || !src) return E_INVALID_VALUE;
	if (srcdev && !dev_range((uintptr_t)src, n)) return E_INVALID_VALUE;
	if (dstdev && !dev_range((uintptr_t)dst, n)) return E_INVALID_VALUE;
	return stream_push(s, dst, src, n);
}

int hipIpcGetMemHandle(ipc_handle *h, void *p) { return ipc_get(h, (uintptr_t)p); }

int hipIpcOpenMemHandle(void **out, ipc_handle h, unsigned int flags) {
	uintptr_t p = 0;
	int r = ipc_open(&p, &h, flags);
	if (r == E_OK) *out = (void *)p;
	return r;
}

int hipIpcCloseMemHandle(void *p) { return free_rec((uintptr_t)p, K_IPC); }

#ifndef STANDIN_NO_DMABUF
int hipMemGetHandleForAddressRange(void *handle, void *p, size_t size, int type, unsigned long long flags) {
	if (flags) return E_INVALID_VALUE;
	return dmabuf(handle, (uintptr_t)p, size, type);
}
#endif

int hipDeviceGetPCIBusId(char *id, int n, int d) { return pci_bus_id(id, n, d); }

const char *hipGetErrorString(int code) {
	const char *s = err_string(code);
	return s ? s : "unknown error";
}
