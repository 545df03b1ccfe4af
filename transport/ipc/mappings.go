package ipc

import (
	"sync"

	"github.com/mori-go/mori-go/core"
)

// mappings are the IPC mappings of this process, shared by all its
// engines: HIP maps a handle only once per process and device (CUDA
// refcounts a second open, returning the same address).
var mappings = struct {
	sync.Mutex // also orders mapping and unmapping
	m          map[handleKey]*handle
}{m: make(map[handleKey]*handle)}

// unmapsPending counts the unmaps started and not finished; Backend.Close
// waits for them.
var unmapsPending sync.WaitGroup

type handleKey struct {
	gpu    core.GPUIPC // the driver that mapped it
	h      [core.IPCHandleSize]byte
	device int
}

// handle is one IPC mapping, shared by the remote memories in it.
//
// Unmapping runs on a goroutine of its own, never on the caller's path:
// hipIpcCloseMemHandle waits for every stream of the device, which in the
// application's process may take as long as its kernels run, and the last
// reference is often dropped while answering a peer's CLOSE. Until that
// goroutine has started, a new user takes the mapping back (no unmap and
// map again); while it unmaps, a new user waits for gone and maps anew.
type handle struct {
	key   handleKey
	base  uintptr
	size  uint64
	unmap func() error
	gone  chan struct{} // closed once unmapped (and out of mappings.m)
	// Guarded by mappings.
	refs      int
	closing   bool // refs fell to 0: an unmap is queued
	unmapping bool // the unmap has started
}

// acquireHandle returns the mapping hk names, with a reference held for b,
// mapping it with b's driver when the process has none.
func (b *Backend) acquireHandle(hk handleKey) (*handle, error) {
	for {
		mappings.Lock()
		hd := mappings.m[hk]
		if hd != nil && hd.unmapping {
			mappings.Unlock()
			<-hd.gone
			continue
		}
		if hd == nil {
			base, size, unmap, err := b.gpu.IPCMap(hk.h, hk.device)
			if err != nil {
				mappings.Unlock()
				return nil, err
			}
			hd = &handle{key: hk, base: base, size: size, unmap: unmap, gone: make(chan struct{})}
			mappings.m[hk] = hd
			b.log.Debug("same-host GPU path: mapped an allocation", "device", hk.device, "base", base, "size", size)
		}
		hd.refs++
		hd.closing = false
		b.held[hd]++
		mappings.Unlock()
		return hd, nil
	}
}

// unref drops b's reference to a mapping; after the last one, the mapping
// is unmapped in the background.
func (b *Backend) unref(hd *handle) {
	mappings.Lock()
	defer mappings.Unlock()
	if b.held[hd]--; b.held[hd] == 0 {
		delete(b.held, hd)
	}
	hd.refs--
	if hd.refs > 0 || hd.closing {
		return
	}
	hd.closing = true
	unmapsPending.Add(1)
	go b.unmapLater(hd)
}

// unmapLater unmaps hd unless it was taken back meanwhile.
func (b *Backend) unmapLater(hd *handle) {
	defer unmapsPending.Done()
	mappings.Lock()
	if !hd.closing || hd.refs > 0 {
		mappings.Unlock()
		return
	}
	hd.closing, hd.unmapping = false, true
	mappings.Unlock()
	err := hd.unmap()
	mappings.Lock()
	if mappings.m[hd.key] == hd {
		delete(mappings.m, hd.key)
	}
	close(hd.gone)
	mappings.Unlock()
	if err != nil {
		b.log.Warn("same-host GPU path: unmapping an allocation", "device", hd.key.device, "err", err)
		return
	}
	b.log.Debug("same-host GPU path: unmapped an allocation", "device", hd.key.device, "base", hd.base)
}
