package ipc

import (
	"errors"
	"log/slog"
	"sync"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/mori-go/mori-go/core"
)

// slowUnmapGPU maps handles as HIP does (a second open of a mapped handle
// fails) and unmaps only when release is closed, as hipIpcCloseMemHandle
// returns only when every stream of the device is idle.
type slowUnmapGPU struct {
	release chan struct{}

	mu             sync.Mutex
	mapped         map[[core.IPCHandleSize]byte]bool
	maps, unmapped int
}

func (g *slowUnmapGPU) IPCExport(uintptr) ([core.IPCHandleSize]byte, uint64, error) {
	return [core.IPCHandleSize]byte{}, 0, errors.New("not used")
}

func (g *slowUnmapGPU) CopyDeviceBatch(int, []core.DeviceCopy) error { return nil }

func (g *slowUnmapGPU) IPCMap(h [core.IPCHandleSize]byte, device int) (uintptr, uint64, func() error, error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.mapped[h] {
		return 0, 0, nil, errors.New("handle already mapped in this process")
	}
	g.mapped[h] = true
	g.maps++
	unmap := func() error {
		<-g.release
		g.mu.Lock()
		defer g.mu.Unlock()
		delete(g.mapped, h)
		g.unmapped++
		return nil
	}
	return 0x10000, 4096, unmap, nil
}

func (g *slowUnmapGPU) counts() (maps, unmapped int) {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.maps, g.unmapped
}

// The last reference to a mapping is dropped (answering a peer's CLOSE)
// without waiting for the driver's unmap; a user that comes back while the
// unmap runs waits for it and maps again, and never meets the driver's
// "already mapped" refusal.
func TestUnmapRunsOffTheCallersPath(t *testing.T) {
	g := &slowUnmapGPU{release: make(chan struct{}), mapped: map[[core.IPCHandleSize]byte]bool{}}
	b := &Backend{gpu: g, log: slog.New(slog.DiscardHandler), held: map[*handle]int{}}
	hk := handleKey{gpu: g, h: [core.IPCHandleSize]byte{7}, device: 0}

	hd, err := b.acquireHandle(hk)
	require.NoError(t, err)
	b.unref(hd) // before the fix: blocked here until release
	maps, unmapped := g.counts()
	require.Equal(t, 1, maps)
	require.Zero(t, unmapped, "the unmap waits for the device, not the caller")
	require.Empty(t, b.held)

	again := make(chan error, 1)
	go func() {
		hd, err := b.acquireHandle(hk)
		if err == nil {
			b.unref(hd)
		}
		again <- err
	}()
	close(g.release)
	require.NoError(t, <-again, "taken back or mapped anew, never refused")
	unmapsPending.Wait()
	maps, unmapped = g.counts()
	require.Equal(t, maps, unmapped, "every mapping was unmapped once")
	mappings.Lock()
	_, left := mappings.m[hk]
	mappings.Unlock()
	require.False(t, left)
}
