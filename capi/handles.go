package main

import (
	"fmt"
	"sync"

	"github.com/mori-go/mori-go/core"
)

// handleTable maps the integer handles that cross the C ABI to Go objects.
// It is the C ABI's one piece of global state; data planes keep
// process-wide state of their own where the driver is process-wide (the
// IPC mappings of transport/ipc, the loaded libibverbs of verbs).
type handleTable struct {
	mu   sync.RWMutex
	next uint64
	m    map[uint64]any
}

var handles = &handleTable{next: 1, m: make(map[uint64]any)}

func (h *handleTable) add(v any) uint64 {
	h.mu.Lock()
	defer h.mu.Unlock()
	id := h.next
	h.next++
	h.m[id] = v
	return id
}

func (h *handleTable) get(id uint64) any {
	h.mu.RLock()
	defer h.mu.RUnlock()
	return h.m[id]
}

func (h *handleTable) remove(id uint64) any {
	h.mu.Lock()
	defer h.mu.Unlock()
	v := h.m[id]
	delete(h.m, id)
	return v
}

func (h *handleTable) count() int {
	h.mu.RLock()
	defer h.mu.RUnlock()
	return len(h.m)
}

func engineOf(id uint64) (*engineHandle, error) {
	e, ok := handles.get(id).(*engineHandle)
	if !ok {
		return nil, core.Errorf(core.ErrInvalidArgs, "engine handle %d is not valid (destroyed or never created)", id)
	}
	return e, nil
}

func statusOf(id uint64) (*core.Status, error) {
	s, ok := handles.get(id).(*core.Status)
	if !ok {
		return nil, core.Errorf(core.ErrInvalidArgs, "status handle %d is not valid (released or never returned)", id)
	}
	return s, nil
}

var errNullPointer = fmt.Errorf("null pointer")
