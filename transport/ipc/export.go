package ipc

import (
	"sync"
	"time"

	"github.com/mori-go/mori-go/core"
)

// export is the attachment of an exported local region: who has opened it.
type export struct {
	h   [core.IPCHandleSize]byte
	off uint64

	mu      sync.Mutex
	closed  bool
	openers map[string]core.EngineDesc // by key; Host and Port only
}

// RegisterMemory exports GPU memory: the blob carries the IPC handle of
// its allocation and its offset there. Memory the driver cannot export
// gets no blob (peers then use the data backend); that is not an error.
func (b *Backend) RegisterMemory(r *core.Region) (*core.BackendBlob, error) {
	if r.Host || r.Location != core.LocationGPU {
		return nil, nil
	}
	h, off, err := b.gpu.IPCExport(r.Addr)
	if err != nil {
		b.log.Info("same-host GPU path: memory cannot be exported; peers on this node will use the data backend",
			"memory", r.ID, "device", r.Device, "reason", err.Error())
		return nil, nil
	}
	b.exports.Store(r, &export{h: h, off: off, openers: make(map[string]core.EngineDesc)})
	return &core.BackendBlob{Type: core.BackendXGMI, Data: encodeBlob(h, off)}, nil
}

// DeregisterMemory tells the engines that opened the memory to stop using
// it, and waits for their answers (or Timeout).
func (b *Backend) DeregisterMemory(r *core.Region) {
	if x, ok := b.exports.Detach(r); ok {
		b.closeExport(r.ID, x, b.opts.Timeout)
	}
}

func (b *Backend) closeExport(id uint32, x *export, timeout time.Duration) {
	x.mu.Lock()
	x.closed = true
	openers := x.openers
	x.openers = nil
	x.mu.Unlock()
	var wg sync.WaitGroup
	for key, o := range openers {
		wg.Go(func() {
			start := time.Now()
			if _, err := callTimeout(b.env.Call, o, encodeClose(id), timeout); err != nil {
				b.log.Warn("same-host GPU path: could not tell an engine that memory it mapped is gone",
					"peer", key, "memory", id, "err", err, "waited", time.Since(start).String())
			}
		})
	}
	wg.Wait()
}

// callTimeout runs call but gives up waiting after timeout (the call goes
// on in the background with its own, longer, bound).
func callTimeout(call func(core.EngineDesc, []byte) ([]byte, error), peer core.EngineDesc, body []byte, timeout time.Duration) ([]byte, error) {
	type result struct {
		out []byte
		err error
	}
	ch := make(chan result, 1)
	go func() {
		out, err := call(peer, body)
		ch <- result{out, err}
	}()
	select {
	case r := <-ch:
		return r.out, r.err
	case <-time.After(timeout):
		return nil, core.Errorf(core.ErrTimeout, "no answer within %s", timeout)
	}
}

// HandleControl answers OPEN (as exporter) and CLOSE (as importer).
func (b *Backend) HandleControl(from string, body []byte) ([]byte, error) {
	if len(body) == 0 {
		return nil, core.Errorf(core.ErrInvalidArgs, "same-host path: empty message from %q", from)
	}
	switch body[0] {
	case opOpen:
		m, err := decodeOpen(body)
		if err != nil {
			return nil, err
		}
		return nil, b.handleOpen(from, &m)
	case opClose:
		mem, err := decodeClose(body)
		if err != nil {
			return nil, err
		}
		b.closeMappings(func(k memKey) bool { return k.peer == from && k.mem == mem })
		return nil, nil
	}
	return nil, core.Errorf(core.ErrInvalidArgs, "same-host path: unknown message %d from %q", body[0], from)
}

func (b *Backend) handleOpen(from string, m *openMsg) error {
	r, err := b.env.Registry.Resolve(m.Mem, m.Token)
	if err != nil {
		return err
	}
	x, ok := b.exports.Load(r)
	if !ok {
		return core.Errorf(core.ErrNotFound, "memory %d is not exported for the same-host path", m.Mem)
	}
	x.mu.Lock()
	defer x.mu.Unlock()
	switch {
	case x.closed:
		return core.Errorf(core.ErrNotFound, "memory %d was deregistered", m.Mem)
	case m.Size != r.Size || m.Offset != x.off || m.Handle != x.h:
		return core.Errorf(core.ErrInvalidArgs, "memory %d: the descriptor (size %d, offset %d) is not this engine's registration (size %d, offset %d)",
			m.Mem, m.Size, m.Offset, r.Size, x.off)
	}
	x.openers[from] = core.EngineDesc{Key: from, Host: m.Host, Port: m.Port}
	b.log.Debug("same-host GPU path: memory opened by a peer", "peer", from, "memory", m.Mem)
	return nil
}
