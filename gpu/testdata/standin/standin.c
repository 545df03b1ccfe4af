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
//   - CUDA pointer queries, like every CUDA call here, need a current
//     context (CUDA_ERROR_INVALID_CONTEXT without one), and counters show
//     which device's primary context was retained: code that retains GPU 0
//     for a query about GPU 1 shows up.
//   - CUDA refcounts IPC opens: opening a handle that is already open in
//     the process returns the same address and takes a reference, and
//     cuIpcCloseMemHandle unmaps after the last one. HIP (here) refuses the
//     second open.
//   - dma-buf: CUDA's cuMemGetHandleForAddressRange returns a dma-buf that
//     starts at the address asked for; HIP's hipMemGetHandleForAddressRange
//     returns one of the whole allocation, whatever the address, and
//     hsa_amd_portable_export_dmabuf returns that and the offset of the
//     address in it. A dma-buf fd is a dup of the arena's memfd: the
//     stand-in remembers where each one starts (standin_query
//     "dmabuf_start"), so tests can read what a consumer at an offset sees.
//   - Events: cuEventQuery/hipEventQuery report "not ready" (600) the first
//     time they are asked about a recorded event, then run the stream's
//     copies up to the record and report success.
//   - Sticky errors: standin_inject("sticky", code) makes the next copy
//     fail with code (700: illegal address), and every call after it that
//     touches a device, as a corrupted CUDA context does.
//
// Build variants: -DSTANDIN_NO_DEVICE makes cuInit/hipInit report no
// device (error 100); -DSTANDIN_NO_DMABUF leaves out the dma-buf export
// functions, as an old driver would (-DSTANDIN_NO_HSA only ROCr's
// hsa_amd_portable_export_dmabuf); -DSTANDIN_PROPRIETARY has them but
// reports CU_DEVICE_ATTRIBUTE_DMA_BUF_SUPPORTED 0 and refuses the export
// (801), as NVIDIA's proprietary kernel modules do; -DSTANDIN_STRICT_IPC
// refuses to open handles exported by the same process, as CUDA and HIP do
// (by default the stand-in allows it, so that one test process can play
// both sides); -DSTANDIN_VMM_CHUNK=N makes allocations larger than N bytes
// (a page multiple) VMM memory, as PyTorch's expandable_segments makes
// with cuMemCreate/cuMemMap: mappings of N bytes each, adjacent, each its
// own range for pointer queries, not legacy-IPC capable (cuIpcGetMemHandle
// refuses them).
//
// Test hooks (no driver has them): standin_query(name, arg) reads a
// counter or a fact, standin_inject(name, arg) injects a fault.
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
	E_NOT_READY = 600,
	E_ILLEGAL_ADDRESS = 700,
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
	int pid;   // IPC records: the exporting process
	int refs;  // IPC records: opens not yet closed (CUDA refcounts them)
	int vmm;   // a VMM mapping (not legacy-IPC capable)
	int group; // VMM mappings of one allocation share a group (> 0)
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
	size_t done; // ops[0:done] have run (by an event query)
	size_t base; // ops run and dropped before ops[0], for event positions
} stream;

typedef struct {
	stream *s; // recorded on, or NULL
	size_t at; // the stream's position (base + nops) when recorded
	int queried;
} event;

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
static int ngroups;

// Counters and faults for the test hooks, guarded by mu.
static long ctx_retains[NDEV], stream_syncs, host_allocs, event_queries;
static int sticky_next, sticky; // the code the next copy fails with; the code every call fails with
#define MAXDMABUF 64
static struct {
	int fd;
	long start; // arena offset of the dma-buf's byte 0
} dmabufs[MAXDMABUF];

// sticky_err returns the sticky error, if the "context" is corrupted.
static int sticky_err(void) {
	pthread_mutex_lock(&mu);
	int r = sticky;
	pthread_mutex_unlock(&mu);
	return r;
}

// copy_fault returns the code an enqueued copy fails with, making it
// sticky, or E_OK.
static int copy_fault(void) {
	pthread_mutex_lock(&mu);
	if (sticky_next) {
		sticky = sticky_next;
		sticky_next = 0;
	}
	int r = sticky;
	pthread_mutex_unlock(&mu);
	return r;
}

static void note_dmabuf(int fd, long start) {
	pthread_mutex_lock(&mu);
	dmabufs[(unsigned)fd % MAXDMABUF].fd = fd;
	dmabufs[(unsigned)fd % MAXDMABUF].start = start;
	pthread_mutex_unlock(&mu);
}

long standin_query(const char *name, int arg) {
	long r = -1;
	pthread_mutex_lock(&mu);
	if (strcmp(name, "ctx_retains") == 0 && arg >= 0 && arg < NDEV) r = ctx_retains[arg];
	if (strcmp(name, "stream_syncs") == 0) r = stream_syncs;
	if (strcmp(name, "host_allocs") == 0) r = host_allocs;
	if (strcmp(name, "event_queries") == 0) r = event_queries;
	if (strcmp(name, "ipc_mappings") == 0) {
		r = 0;
		for (int i = 0; i < nrecs; i++) r += recs[i].live && recs[i].kind == K_IPC;
	}
	if (strcmp(name, "dmabuf_start") == 0 && arg >= 0 && dmabufs[arg % MAXDMABUF].fd == arg)
		r = dmabufs[arg % MAXDMABUF].start;
	pthread_mutex_unlock(&mu);
	return r;
}

int standin_inject(const char *name, int arg) {
	int r = E_INVALID_VALUE;
	pthread_mutex_lock(&mu);
	if (strcmp(name, "sticky") == 0) {
		sticky_next = arg;
		r = E_OK;
	}
	pthread_mutex_unlock(&mu);
	return r;
}

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
// record, or in adjacent VMM mappings of one allocation.
static int dev_range(uintptr_t p, size_t n) {
	pthread_mutex_lock(&mu);
	rec *r = find_rec(p);
	int ok = r && r->kind != K_HOST;
	while (ok && n > r->size - (p - r->base)) {
		size_t k = r->size - (p - r->base);
		rec *next = r->group ? find_rec(r->base + r->size) : NULL;
		ok = next && next->group == r->group;
		p += k;
		n -= k;
		r = next;
	}
	pthread_mutex_unlock(&mu);
	return ok;
}

#ifndef STANDIN_VMM_CHUNK
#define STANDIN_VMM_CHUNK 0
#endif

// dev_alloc bump-allocates n bytes of device's arena: one record, or, for
// VMM memory, one record per STANDIN_VMM_CHUNK bytes.
static int dev_alloc(int device, size_t n, uintptr_t *out) {
	if (!inited) return E_NOT_INITIALIZED;
	if (device < 0 || device >= NDEV) return E_INVALID_DEVICE;
	if (n == 0) return E_INVALID_VALUE;
	int r = sticky_err();
	if (r != E_OK) return r;
	size_t chunk = STANDIN_VMM_CHUNK, m = page_round(n);
	int vmm = chunk > 0 && n > chunk;
	if (vmm) m = (n + chunk - 1) / chunk * chunk;
	pthread_mutex_lock(&mu);
	r = E_OUT_OF_MEMORY;
	if (arena[device].used + m <= ARENA && nrecs + (vmm ? m / chunk : 1) <= MAXREC) {
		rec x = {0};
		x.base = (uintptr_t)(arena[device].base + arena[device].used);
		x.size = n;
		x.mapped = m;
		x.off = arena[device].used;
		x.device = device;
		x.kind = K_DEVICE;
		*out = x.base;
		if (!vmm) {
			r = add_rec(x);
		} else {
			x.vmm = 1;
			x.group = ++ngroups;
			for (size_t at = 0; at < m; at += chunk) {
				rec c = x;
				c.base = x.base + at;
				c.off = x.off + at;
				c.size = c.mapped = chunk;
				r = add_rec(c);
			}
		}
		arena[device].used += m;
	}
	pthread_mutex_unlock(&mu);
	return r;
}

// free_rec ends the record whose base is p and whose kind is kind (all
// the mappings of a VMM allocation; an IPC mapping after its last close).
static int free_rec(uintptr_t p, int kind) {
	pthread_mutex_lock(&mu);
	int r = sticky ? sticky : E_INVALID_VALUE;
	for (int i = 0; i < nrecs && !sticky; i++) {
		rec *x = &recs[i];
		if (x->live && x->base == p && x->kind == kind) {
			r = E_OK;
			if (kind == K_IPC && --x->refs > 0) break;
			x->live = 0;
			if (kind == K_HOST) free((void *)p);
			if (kind == K_IPC) munmap((void *)p, x->mapped);
			for (int j = 0; x->group && j < nrecs; j++)
				if (recs[j].group == x->group) recs[j].live = 0;
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
	host_allocs++;
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
	case 10: // IS_LEGACY_CUDA_IPC_CAPABLE, HIP's IS_LEGACY_HIP_IPC_CAPABLE
		*(int *)data = x.kind != K_HOST && !x.vmm;
		return E_OK;
	case 11: // RANGE_START_ADDR
	case 19: // MAPPING_BASE_ADDR
		*(uintptr_t *)data = x.base;
		return E_OK;
	case 12: // RANGE_SIZE
	case 18: // MAPPING_SIZE
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
	if (r && r->kind == K_DEVICE && !r->vmm) {
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

// ipc_open maps the allocation h names. With refcount (CUDA), a handle
// already open in this process returns the same address and takes a
// reference; without (HIP here), the second open fails.
static int ipc_open(uintptr_t *out, const ipc_handle *h, unsigned int flags, int refcount) {
	if (!out || flags != 1 || memcmp(h->magic, "STANDIN", 8) != 0) return E_INVALID_VALUE;
	if (h->device < 0 || h->device >= NDEV || h->off + h->size > ARENA) return E_INVALID_VALUE;
#ifdef STANDIN_STRICT_IPC
	if (h->pid == (int32_t)getpid()) return E_INVALID_CONTEXT; // CUDA: "invalid device context"
#endif
	int r = sticky_err();
	if (r != E_OK) return r;
	pthread_mutex_lock(&mu);
	rec *mapped = NULL;
	for (int i = 0; i < nrecs; i++) {
		rec *x = &recs[i];
		if (x->live && x->kind == K_IPC && x->pid == h->pid && x->device == h->device && x->off == h->off) mapped = x;
	}
	if (mapped && refcount) {
		mapped->refs++;
		*out = mapped->base;
	}
	pthread_mutex_unlock(&mu);
	if (mapped) return refcount ? E_OK : E_INVALID_VALUE; // already mapped in this process
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
	x.refs = 1;
	pthread_mutex_lock(&mu);
	r = add_rec(x);
	pthread_mutex_unlock(&mu);
	if (r != E_OK) {
		munmap(p, m);
		return r;
	}
	*out = x.base;
	return E_OK;
}

// dmabuf exports [p, p+size) as a dma-buf: one that starts at p, or with
// whole (HIP), one of the whole allocation around p. It returns the offset
// of p in the dma-buf in *offset.
__attribute__((unused)) static int dmabuf(int *fd_out, uintptr_t p, size_t size, int whole, uint64_t *offset) {
	if (!fd_out || size == 0) return E_INVALID_VALUE;
	int res = sticky_err();
	if (res != E_OK) return res;
	pthread_mutex_lock(&mu);
	rec *r = find_rec(p);
	res = E_INVALID_VALUE;
	long start = 0;
	if (r && r->kind != K_HOST && size <= r->mapped - (p - r->base)) {
		start = (long)(whole ? r->off : r->off + (p - r->base));
		*offset = whole ? p - r->base : 0;
		int fd = dup(arena[r->device].fd);
		res = fd >= 0 ? E_OK : E_OUT_OF_MEMORY;
		*fd_out = fd;
	}
	pthread_mutex_unlock(&mu);
	if (res == E_OK) note_dmabuf(*fd_out, start);
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

// stream_run runs the queued copies of s up to position at.
static void stream_run(stream *s, size_t at) {
	for (; s->base + s->done < at && s->done < s->nops; s->done++) {
		op *o = &s->ops[s->done];
		memmove(o->dst, o->src, o->n);
	}
}

static int stream_sync(stream *s) {
	if (!s) return E_INVALID_HANDLE;
	int r = sticky_err();
	if (r != E_OK) return r;
	pthread_mutex_lock(&mu);
	stream_syncs++;
	pthread_mutex_unlock(&mu);
	stream_run(s, s->base + s->nops);
	s->base += s->nops;
	s->nops = s->done = 0;
	return E_OK;
}

static int event_new(void **out) {
	if (!out) return E_INVALID_VALUE;
	event *e = calloc(1, sizeof *e);
	if (!e) return E_OUT_OF_MEMORY;
	*out = e;
	return E_OK;
}

static int event_record(event *e, stream *s) {
	if (!e || !s) return E_INVALID_HANDLE;
	int r = sticky_err();
	if (r != E_OK) return r;
	e->s = s;
	e->at = s->base + s->nops;
	e->queried = 0;
	return E_OK;
}

// event_query says "not ready" the first time it is asked about a record,
// then runs the stream up to the record.
static int event_query(event *e) {
	if (!e) return E_INVALID_HANDLE;
	int r = sticky_err();
	if (r != E_OK) return r;
	pthread_mutex_lock(&mu);
	event_queries++;
	pthread_mutex_unlock(&mu);
	if (!e->s) return E_OK;
	if (!e->queried) {
		e->queried = 1;
		return E_NOT_READY;
	}
	stream_run(e->s, e->at);
	return E_OK;
}

static int event_destroy(event *e) {
	if (!e) return E_INVALID_HANDLE;
	free(e);
	return E_OK;
}

static int stream_destroy(stream *s) {
	if (!s) return E_INVALID_HANDLE;
	if (!sticky_err()) stream_run(s, s->base + s->nops); // queued work completes
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
	case E_NOT_READY: return "device not ready";
	case E_ILLEGAL_ADDRESS: return "an illegal memory access was encountered";
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

#ifdef STANDIN_PROPRIETARY
#define DMABUF_SUPPORTED 0
#else
#define DMABUF_SUPPORTED 1
#endif

int cuDeviceGetAttribute(int *v, int attr, int d) {
	if (d < 0 || d >= NDEV) return E_INVALID_DEVICE;
	*v = attr == 124 ? DMABUF_SUPPORTED : 0; // CU_DEVICE_ATTRIBUTE_DMA_BUF_SUPPORTED
	return E_OK;
}

int cuDevicePrimaryCtxRetain(void **ctx, int d) {
	if (!inited) return E_NOT_INITIALIZED;
	if (d < 0 || d >= NDEV) return E_INVALID_DEVICE;
	pthread_mutex_lock(&mu);
	ctx_refs[d]++;
	ctx_retains[d]++;
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

int cuPointerGetAttribute(void *data, int attr, CUdeviceptr p) {
	if (cur_dev() < 0) return E_INVALID_CONTEXT;
	return ptr_attr(data, attr, (uintptr_t)p);
}

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
	int f = copy_fault();
	if (f != E_OK) return f;
	if (!dst || !dev_range(src, n)) return E_INVALID_VALUE;
	return stream_push(cu_stream(s), dst, (const void *)(uintptr_t)src, n);
}

int cuMemcpyHtoDAsync_v2(CUdeviceptr dst, const void *src, size_t n, void *s) {
	if (cur_dev() < 0) return E_INVALID_CONTEXT;
	int f = copy_fault();
	if (f != E_OK) return f;
	if (!src || !dev_range(dst, n)) return E_INVALID_VALUE;
	return stream_push(cu_stream(s), (void *)(uintptr_t)dst, src, n);
}

int cuMemcpyDtoDAsync_v2(CUdeviceptr dst, CUdeviceptr src, size_t n, void *s) {
	if (cur_dev() < 0) return E_INVALID_CONTEXT;
	int f = copy_fault();
	if (f != E_OK) return f;
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
	int r = ipc_open(&p, &h, flags, 1);
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
	if (flags || type != 1 || p % PAGE != 0 || size % PAGE != 0) return E_INVALID_VALUE;
	if (!DMABUF_SUPPORTED) return E_NOT_SUPPORTED;
	uint64_t off = 0;
	return dmabuf(handle, (uintptr_t)p, size, 0, &off);
}
#endif

int cuEventCreate(void **e, unsigned int flags) {
	(void)flags;
	if (cur_dev() < 0) return E_INVALID_CONTEXT;
	return event_new(e);
}

int cuEventRecord(void *e, void *s) {
	if (cur_dev() < 0) return E_INVALID_CONTEXT;
	stream *st = cu_stream(s);
	return st ? event_record(e, st) : E_INVALID_HANDLE;
}

int cuEventQuery(void *e) { return event_query(e); }

int cuEventDestroy_v2(void *e) { return event_destroy(e); }

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
	if (sticky_err()) return sticky_err();
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
	int f = copy_fault();
	if (f != E_OK) return f;
	if (srcdev && !dev_range((uintptr_t)src, n)) return E_INVALID_VALUE;
	if (dstdev && !dev_range((uintptr_t)dst, n)) return E_INVALID_VALUE;
	return stream_push(s, dst, src, n);
}

int hipIpcGetMemHandle(ipc_handle *h, void *p) { return ipc_get(h, (uintptr_t)p); }

int hipIpcOpenMemHandle(void **out, ipc_handle h, unsigned int flags) {
	uintptr_t p = 0;
	int r = ipc_open(&p, &h, flags, 0);
	if (r == E_OK) *out = (void *)p;
	return r;
}

int hipIpcCloseMemHandle(void *p) { return free_rec((uintptr_t)p, K_IPC); }

#ifndef STANDIN_NO_DMABUF
// Like HIP's, the dma-buf covers the whole allocation around p, whatever
// range was asked for.
int hipMemGetHandleForAddressRange(void *handle, void *p, size_t size, int type, unsigned long long flags) {
	if (flags || type != 1) return E_INVALID_VALUE;
	uint64_t off = 0;
	return dmabuf(handle, (uintptr_t)p, size, 1, &off);
}

#ifndef STANDIN_NO_HSA
// hsa_amd_portable_export_dmabuf (ROCr, reached through libamdhip64's
// dependencies): the dma-buf of the allocation around ptr and the offset of
// ptr in it. hsa_status_t: 0 success, 0x1001 invalid argument.
int hsa_amd_portable_export_dmabuf(const void *ptr, size_t size, int *fd, uint64_t *offset) {
	if (!offset) return 0x1001;
	return dmabuf(fd, (uintptr_t)ptr, size, 1, offset) == E_OK ? 0 : 0x1001;
}
#endif
#endif

int hipEventCreateWithFlags(void **e, unsigned int flags) {
	(void)flags;
	return event_new(e);
}

int hipEventRecord(void *e, void *s) { return event_record(e, s); }

int hipEventQuery(void *e) { return event_query(e); }

int hipEventDestroy(void *e) { return event_destroy(e); }

int hipDeviceGetPCIBusId(char *id, int n, int d) { return pci_bus_id(id, n, d); }

const char *hipGetErrorString(int code) {
	const char *s = err_string(code);
	return s ? s : "unknown error";
}
