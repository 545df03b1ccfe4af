// cuda_table.h: the CUDA driver API as package gpu loads it with dlopen,
// declared without cuda.h. cuda_table.c holds the loader and one
// trampoline per function pointer (cgo cannot call C function pointers).
#ifndef MORI_GO_CUDA_TABLE_H
#define MORI_GO_CUDA_TABLE_H
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

// The few CUDA driver API types used here, declared without cuda.h.
typedef int cu_res;                      // CUresult
typedef unsigned long long cu_dptr;      // CUdeviceptr
typedef void *cu_ctx;                    // CUcontext
typedef void *cu_stream;                 // CUstream
typedef void *cu_event;                  // CUevent
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
	cu_res (*eventCreate)(cu_event *, unsigned int);
	cu_res (*eventRecord)(cu_event, cu_stream);
	cu_res (*eventQuery)(cu_event);
	cu_res (*eventDestroy)(cu_event);
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

const char *cu_load(void *lib, cu_table *t);
cu_res cu_init(cu_table *t, unsigned int flags);
cu_res cu_device_get_count(cu_table *t, int *n);
cu_res cu_device_get(cu_table *t, int *d, int ordinal);
cu_res cu_device_get_attribute(cu_table *t, int *v, int attr, int d);
cu_res cu_primary_ctx_retain(cu_table *t, cu_ctx *c, int d);
cu_res cu_primary_ctx_release(cu_table *t, int d);
cu_res cu_ctx_push_current(cu_table *t, cu_ctx c);
cu_res cu_ctx_pop_current(cu_table *t);
cu_res cu_pointer_get_attribute(cu_table *t, void *data, int attr, cu_dptr p);
cu_res cu_mem_alloc(cu_table *t, cu_dptr *p, size_t n);
cu_res cu_mem_free(cu_table *t, cu_dptr p);
cu_res cu_mem_host_alloc(cu_table *t, void **p, size_t n, unsigned int flags);
cu_res cu_mem_free_host(cu_table *t, void *p);
cu_res cu_stream_create(cu_table *t, cu_stream *s, unsigned int flags);
cu_res cu_stream_destroy(cu_table *t, cu_stream s);
cu_res cu_event_create(cu_table *t, cu_event *e, unsigned int flags);
cu_res cu_event_record(cu_table *t, cu_event e, cu_stream s);
cu_res cu_event_query(cu_table *t, cu_event e);
cu_res cu_event_destroy(cu_table *t, cu_event e);
cu_res cu_memcpy_dtoh_async(cu_table *t, void *dst, cu_dptr src, size_t n, cu_stream s);
cu_res cu_memcpy_htod_async(cu_table *t, cu_dptr dst, const void *src, size_t n, cu_stream s);
cu_res cu_memcpy_dtod_async(cu_table *t, cu_dptr dst, cu_dptr src, size_t n, cu_stream s);
cu_res cu_ipc_get_mem_handle(cu_table *t, cu_ipc_handle *h, cu_dptr p);
cu_res cu_ipc_open_mem_handle(cu_table *t, cu_dptr *p, const cu_ipc_handle *h, unsigned int flags);
cu_res cu_ipc_close_mem_handle(cu_table *t, cu_dptr p);
cu_res cu_mem_get_handle_for_address_range(cu_table *t, int *fd, cu_dptr p, size_t n, int type, unsigned long long flags);
cu_res cu_get_error_string(cu_table *t, cu_res r, const char **s);
cu_res cu_device_get_pci_bus_id(cu_table *t, char *id, int n, int d);

#endif
