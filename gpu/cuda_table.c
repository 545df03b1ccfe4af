// cuda_table.c: see cuda_table.h.
#include <dlfcn.h>

#include "cuda_table.h"

// cu_load fills t from lib. It returns NULL, or the name of the first
// required symbol that lib lacks.
const char *cu_load(void *lib, cu_table *t) {
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
		{"cuEventCreate", NULL, offsetof(cu_table, eventCreate), 1},
		{"cuEventRecord", NULL, offsetof(cu_table, eventRecord), 1},
		{"cuEventQuery", NULL, offsetof(cu_table, eventQuery), 1},
		{"cuEventDestroy_v2", "cuEventDestroy", offsetof(cu_table, eventDestroy), 1},
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
cu_res cu_init(cu_table *t, unsigned int flags) { return t->init(flags); }
cu_res cu_device_get_count(cu_table *t, int *n) { return t->deviceGetCount(n); }
cu_res cu_device_get(cu_table *t, int *d, int ordinal) { return t->deviceGet(d, ordinal); }
cu_res cu_device_get_attribute(cu_table *t, int *v, int attr, int d) {
	return t->deviceGetAttribute ? t->deviceGetAttribute(v, attr, d) : cu_missing;
}
cu_res cu_primary_ctx_retain(cu_table *t, cu_ctx *c, int d) { return t->primaryCtxRetain(c, d); }
cu_res cu_primary_ctx_release(cu_table *t, int d) { return t->primaryCtxRelease(d); }
cu_res cu_ctx_push_current(cu_table *t, cu_ctx c) { return t->ctxPushCurrent(c); }
cu_res cu_ctx_pop_current(cu_table *t) { cu_ctx c; return t->ctxPopCurrent(&c); }
cu_res cu_pointer_get_attribute(cu_table *t, void *data, int attr, cu_dptr p) {
	return t->pointerGetAttribute(data, attr, p);
}
cu_res cu_mem_alloc(cu_table *t, cu_dptr *p, size_t n) { return t->memAlloc(p, n); }
cu_res cu_mem_free(cu_table *t, cu_dptr p) { return t->memFree(p); }
cu_res cu_mem_host_alloc(cu_table *t, void **p, size_t n, unsigned int flags) {
	return t->memHostAlloc(p, n, flags);
}
cu_res cu_mem_free_host(cu_table *t, void *p) { return t->memFreeHost(p); }
cu_res cu_stream_create(cu_table *t, cu_stream *s, unsigned int flags) { return t->streamCreate(s, flags); }
cu_res cu_stream_destroy(cu_table *t, cu_stream s) { return t->streamDestroy(s); }
cu_res cu_event_create(cu_table *t, cu_event *e, unsigned int flags) { return t->eventCreate(e, flags); }
cu_res cu_event_record(cu_table *t, cu_event e, cu_stream s) { return t->eventRecord(e, s); }
cu_res cu_event_query(cu_table *t, cu_event e) { return t->eventQuery(e); }
cu_res cu_event_destroy(cu_table *t, cu_event e) { return t->eventDestroy(e); }
cu_res cu_memcpy_dtoh_async(cu_table *t, void *dst, cu_dptr src, size_t n, cu_stream s) {
	return t->memcpyDtoHAsync(dst, src, n, s);
}
cu_res cu_memcpy_htod_async(cu_table *t, cu_dptr dst, const void *src, size_t n, cu_stream s) {
	return t->memcpyHtoDAsync(dst, src, n, s);
}
cu_res cu_memcpy_dtod_async(cu_table *t, cu_dptr dst, cu_dptr src, size_t n, cu_stream s) {
	return t->memcpyDtoDAsync(dst, src, n, s);
}
cu_res cu_ipc_get_mem_handle(cu_table *t, cu_ipc_handle *h, cu_dptr p) { return t->ipcGetMemHandle(h, p); }
cu_res cu_ipc_open_mem_handle(cu_table *t, cu_dptr *p, const cu_ipc_handle *h, unsigned int flags) {
	return t->ipcOpenMemHandle(p, *h, flags);
}
cu_res cu_ipc_close_mem_handle(cu_table *t, cu_dptr p) { return t->ipcCloseMemHandle(p); }
cu_res cu_mem_get_handle_for_address_range(cu_table *t, int *fd, cu_dptr p, size_t n, int type,
                                                  unsigned long long flags) {
	return t->memGetHandleForAddressRange ? t->memGetHandleForAddressRange(fd, p, n, type, flags) : cu_missing;
}
cu_res cu_get_error_string(cu_table *t, cu_res r, const char **s) { return t->getErrorString(r, s); }
cu_res cu_device_get_pci_bus_id(cu_table *t, char *id, int n, int d) {
	return t->deviceGetPCIBusId ? t->deviceGetPCIBusId(id, n, d) : cu_missing;
}

