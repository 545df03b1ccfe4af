package gpu

/*
#cgo LDFLAGS: -ldl
#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>

// mg_dlopen opens name and, on failure, copies dlerror() into err. dlopen
// and dlerror run inside this one C call, so they are on the same OS thread
// and the message is the one for this dlopen.
static void *mg_dlopen(const char *name, int noload, char *err, size_t errlen) {
	int flags = RTLD_NOW | (noload ? RTLD_NOLOAD : RTLD_LOCAL);
	dlerror();
	void *h = dlopen(name, flags);
	if (h == NULL) {
		const char *e = dlerror();
		snprintf(err, errlen, "%s", e != NULL ? e : "dlopen failed");
	}
	return h;
}

static int mg_has_symbol(void *lib, const char *name) {
	return dlsym(lib, name) != NULL;
}
*/
import "C"

import (
	"fmt"
	"runtime"
	"strings"
	"unsafe"
)

// library is a dlopen'd driver library. Handles are never closed: a GPU
// driver must not be unloaded while other code in the process (torch) may
// still use it, and dlopen of an open library only takes a reference.
type library struct {
	handle unsafe.Pointer
	name   string
	reused bool // found already loaded in the process (RTLD_NOLOAD)
}

// openLibrary tries each name first as already loaded, then loads the
// first one that can be loaded. It returns an error wrapping
// ErrNotSupported when none can.
func openLibrary(names []string) (*library, error) {
	// Not needed for correctness (mg_dlopen reads dlerror in the same C
	// call), but keeps the whole search on one thread.
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	var errbuf [512]C.char
	var msgs []string
	for _, noload := range []C.int{1, 0} {
		for _, name := range names {
			cname := C.CString(name)
			h := C.mg_dlopen(cname, noload, &errbuf[0], C.size_t(len(errbuf)))
			C.free(unsafe.Pointer(cname))
			if h != nil {
				return &library{handle: h, name: name, reused: noload == 1}, nil
			}
			if noload == 0 {
				msgs = append(msgs, C.GoString(&errbuf[0]))
			}
		}
	}
	return nil, fmt.Errorf("%w: %s", ErrNotSupported, strings.Join(msgs, "; "))
}

func (l *library) has(symbol string) bool {
	cs := C.CString(symbol)
	defer C.free(unsafe.Pointer(cs))
	return C.mg_has_symbol(l.handle, cs) != 0
}
