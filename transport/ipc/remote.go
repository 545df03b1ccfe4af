package ipc

import (
	"fmt"
	"sync"

	"github.com/mori-go/mori-go/core"
)

// memKey names a remote memory as mapped for one local device.
type memKey struct {
	peer   string
	mem    uint32
	device int
}

// mapping is a remote memory as this engine reaches it: a pointer into a
// shared IPC mapping, with a count of the copies using it.
type mapping struct {
	key   memKey
	id    string // the descriptor's blob and size: what it was opened for
	ready chan struct{}
	// Set before ready is closed.
	err      error
	fallback bool
	ptr      uintptr
	h        *handle

	mu     sync.Mutex
	cond   *sync.Cond
	users  int
	closed bool
}

// acquire returns the mapping of t's remote memory with a use held,
// opening it the first time, or errUnmappable.
func (b *Backend) acquire(t *core.Transfer) (*mapping, error) {
	blob := t.Remote.Blob(core.BackendXGMI)
	h, off, err := decodeBlob(blob)
	if err != nil {
		return nil, core.Errorf(core.ErrInvalidArgs, "memory %d of %q: %w", t.Remote.ID, t.Peer, err)
	}
	key := memKey{peer: t.Peer, mem: t.Remote.ID, device: t.Local.Device}
	id := fmt.Sprintf("%x/%d", blob, t.Remote.Size)
	b.mu.Lock()
	if b.closed {
		b.mu.Unlock()
		return nil, core.Errorf(core.ErrBadState, "engine %q is closed", b.env.LocalKey)
	}
	peer, ok := b.peers[t.Peer]
	if !ok || b.fellBack[key] == id {
		b.mu.Unlock()
		return nil, errUnmappable
	}
	m := b.mems[key]
	var stale *mapping
	if m != nil && m.id != id {
		// The peer hands out another descriptor under the same id.
		stale, m = m, nil
	}
	opener := m == nil
	if opener {
		m = &mapping{key: key, id: id, ready: make(chan struct{})}
		m.cond = sync.NewCond(&m.mu)
		b.mems[key] = m
	}
	b.mu.Unlock()
	if stale != nil {
		go b.closeMapping(stale)
	}
	if opener {
		b.open(m, peer, t.Remote.Token, h, off, t.Remote.Size)
	}
	<-m.ready
	switch {
	case m.fallback:
		return nil, errUnmappable
	case m.err != nil:
		return nil, m.err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return nil, core.Errorf(core.ErrNotFound, "memory %d of %q was deregistered", t.Remote.ID, t.Peer)
	}
	m.users++
	return m, nil
}

func (b *Backend) release(m *mapping) {
	m.mu.Lock()
	m.users--
	if m.users == 0 {
		m.cond.Broadcast()
	}
	m.mu.Unlock()
}

// open makes m usable: OPEN to the exporter, then the IPC mapping (shared
// with other memories of the same allocation).
func (b *Backend) open(m *mapping, peer core.EngineDesc, tok core.Token, h [core.IPCHandleSize]byte, off, size uint64) {
	defer close(m.ready)
	forget := func() {
		b.mu.Lock()
		if b.mems[m.key] == m {
			delete(b.mems, m.key)
		}
		b.mu.Unlock()
	}
	req := openMsg{Mem: m.key.mem, Token: tok, Size: size, Offset: off, Handle: h, Port: b.opts.Port, Host: b.opts.Host}
	if _, err := b.env.Call(peer, req.encode()); err != nil {
		m.err = core.Errorf(core.CodeOf(err), "same-host path to memory %d of %q: %w", m.key.mem, m.key.peer, err)
		forget()
		return
	}
	hd, err := b.acquireHandle(handleKey{gpu: b.gpu, h: h, device: m.key.device})
	if err != nil {
		m.fallback = true
		b.mu.Lock()
		if b.mems[m.key] == m {
			delete(b.mems, m.key)
		}
		b.fellBack[m.key] = m.id
		b.mu.Unlock()
		b.log.Info("same-host GPU path unavailable for this memory: using the data backend",
			"peer", m.key.peer, "memory", m.key.mem, "device", m.key.device, "reason", err.Error())
		return
	}
	if end := off + size; end < off || end > hd.size {
		b.unref(hd)
		m.err = core.Errorf(core.ErrInvalidArgs, "memory %d of %q: offset %d size %d exceeds the %d-byte allocation its handle maps",
			m.key.mem, m.key.peer, off, size, hd.size)
		forget()
		return
	}
	m.ptr = hd.base + uintptr(off)
	m.h = hd
}

// closeMapping waits for m to be opened and for its copies to end, then
// drops its reference to the IPC mapping.
func (b *Backend) closeMapping(m *mapping) {
	<-m.ready
	m.mu.Lock()
	m.closed = true
	for m.users > 0 {
		m.cond.Wait()
	}
	hd := m.h
	m.h = nil
	m.mu.Unlock()
	if hd != nil {
		b.unref(hd)
	}
}
