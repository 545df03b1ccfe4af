package standin

/*
#cgo LDFLAGS: -ldl
#include <dlfcn.h>
#include <stdlib.h>

// The stand-in's test hooks, found in a library the test already loaded.
static void *hook_lib(const char *path) { return dlopen(path, RTLD_NOW | RTLD_NOLOAD); }
static void hook_close(void *lib) { dlclose(lib); }
static void *hook_sym(void *lib, const char *name) { return dlsym(lib, name); }
static long hook_query(void *f, const char *name, int arg) {
	return ((long (*)(const char *, int))f)(name, arg);
}
static int hook_inject(void *f, const char *name, int arg) {
	return ((int (*)(const char *, int))f)(name, arg);
}
*/
import "C"

import (
	"testing"
	"unsafe"
)

// withHook calls f with the address of the hook function symbol of the
// stand-in at lib, which the test must have loaded (gpu.Open).
func withHook(tb testing.TB, lib, symbol string, f func(fn unsafe.Pointer)) {
	tb.Helper()
	cpath := C.CString(lib)
	defer C.free(unsafe.Pointer(cpath))
	h := C.hook_lib(cpath)
	if h == nil {
		tb.Fatalf("stand-in %s is not loaded in this process", lib)
	}
	defer C.hook_close(h)
	csym := C.CString(symbol)
	defer C.free(unsafe.Pointer(csym))
	fn := C.hook_sym(h, csym)
	if fn == nil {
		tb.Fatalf("stand-in %s has no %s", lib, symbol)
	}
	f(fn)
}

// Query reads a counter or fact of the loaded stand-in at lib (see
// standin_query in standin.c): "ctx_retains" (arg: device),
// "stream_syncs", "host_allocs", "event_queries", "ipc_mappings",
// "dmabuf_start" (arg: fd; -1 when unknown).
func Query(tb testing.TB, lib, name string, arg int) int64 {
	tb.Helper()
	var v int64
	withHook(tb, lib, "standin_query", func(fn unsafe.Pointer) {
		cname := C.CString(name)
		defer C.free(unsafe.Pointer(cname))
		v = int64(C.hook_query(fn, cname, C.int(arg)))
	})
	return v
}

// Inject makes the loaded stand-in at lib fail as a driver would:
// "sticky" (arg: the code, e.g. 700) makes the next copy fail and every
// call after it, as a corrupted CUDA context does.
func Inject(tb testing.TB, lib, name string, arg int) {
	tb.Helper()
	withHook(tb, lib, "standin_inject", func(fn unsafe.Pointer) {
		cname := C.CString(name)
		defer C.free(unsafe.Pointer(cname))
		if r := C.hook_inject(fn, cname, C.int(arg)); r != 0 {
			tb.Fatalf("stand-in: inject %s %d: error %d", name, arg, int(r))
		}
	})
}
