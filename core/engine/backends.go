package engine

import (
	"errors"
	"fmt"
	"slices"

	"github.com/mori-go/mori-go/core"
)

// CreateBackend starts a data plane. Asking for RDMA gives RDMA where a
// device is usable and TCP otherwise (Config.Mode decides); asking for TCP
// gives TCP. Creating a backend that exists already changes nothing. It
// returns the type actually created.
//
// cfg is the backend's own configuration (for RDMA, MORI-IO's
// RdmaBackendConfig as the RDMA package declares it); nil takes its
// defaults.
func (e *Engine) CreateBackend(t core.BackendType, cfg any) (core.BackendType, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.closed {
		return 0, core.Errorf(core.ErrBadState, "engine %q is closed", e.cfg.Key)
	}
	if e.data != nil {
		return e.data.Type(), nil
	}
	var b core.Backend
	var err error
	switch t {
	case core.BackendTCP:
		b, err = e.createTCP()
	case core.BackendRDMA:
		b, err = e.createRDMA(cfg)
	case core.BackendXGMI:
		return 0, core.Errorf(core.ErrInvalidArgs, "create backend %s: not supported by mori-go (use RDMA or TCP: GPU transfers between engines of one node take the same-host IPC path by themselves)", t)
	default:
		return 0, core.Errorf(core.ErrInvalidArgs, "create backend %s: not supported by mori-go (use RDMA or TCP)", t)
	}
	if err != nil {
		return 0, err
	}
	if mb, ok := b.(core.MemoryBackend); ok {
		// Memory registered before the backend existed; its descriptors,
		// already handed out, carry no blob of this backend.
		var rerr error
		e.reg.Each(func(r *core.Region) {
			if _, err := mb.RegisterMemory(r); err != nil && rerr == nil {
				rerr = err
			}
		})
		if rerr != nil {
			b.Close()
			return 0, fmt.Errorf("create %s backend: register existing memory: %w", b.Type(), rerr)
		}
	}
	e.data = b
	e.backends = append(e.backends, b)
	e.desc.Backends = append(e.desc.Backends, core.BackendBlob{Type: b.Type(), Data: b.Blob()})
	return b.Type(), nil
}

func (e *Engine) createTCP() (core.Backend, error) {
	f := e.cfg.Backends[core.BackendTCP]
	if f == nil {
		return nil, core.Errorf(core.ErrBadState, "create TCP backend: this build has no TCP data plane")
	}
	return f(e.env(core.BackendTCP), nil)
}

func (e *Engine) createRDMA(cfg any) (core.Backend, error) {
	if e.cfg.Mode == ModeTCP {
		e.log.Info("data plane: TCP (forced by configuration)")
		return e.createTCP()
	}
	rdma := e.cfg.Backends[core.BackendRDMA]
	if rdma == nil {
		if e.cfg.Mode == ModeRDMA {
			return nil, core.Errorf(core.ErrBadState, "RDMA backend required but this build has no RDMA support")
		}
		e.rdmaFallback = "this build has no RDMA support"
		e.log.Warn("data plane: TCP (RDMA requested, but this build has none)", "reason", e.rdmaFallback)
		return e.createTCP()
	}
	b, err := rdma(e.env(core.BackendRDMA), cfg)
	if err == nil {
		e.log.Info("data plane: RDMA")
		return b, nil
	}
	if e.cfg.Mode == ModeRDMA {
		return nil, core.Errorf(core.ErrRDMAOp, "RDMA backend required: %w", err)
	}
	if !errors.Is(err, core.ErrNotSupported) {
		// A wrong configuration is reported, not papered over with TCP.
		return nil, core.Errorf(core.ErrInvalidArgs, "create RDMA backend: %w", err)
	}
	e.rdmaFallback = err.Error()
	e.log.Warn("data plane: TCP (RDMA requested, but no device is usable)", "reason", e.rdmaFallback)
	return e.createTCP()
}

// RDMAFallback says why an RDMA backend was asked for and TCP serves
// instead ("" when that did not happen).
func (e *Engine) RDMAFallback() string {
	e.mu.RLock()
	defer e.mu.RUnlock()
	return e.rdmaFallback
}

// IPC returns the same-host GPU path, or nil when the engine has none (no
// GPU driver, a driver without IPC, or Config.DisableIPC).
func (e *Engine) IPC() SameHost { return e.ipc }

// DataBackend returns the data plane in use, or nil before CreateBackend.
func (e *Engine) DataBackend() core.Backend {
	e.mu.RLock()
	defer e.mu.RUnlock()
	return e.data
}

// RemoveBackend stops the data plane of type t, as MORI-IO's
// remove_backend: its transfers in flight fail, new ones fail until a
// backend is created again, and the peers are connected again (at their
// next transfer) over the new one. Removing a type the engine does not
// run does nothing. The same-host GPU path is not removable (it is chosen
// at creation, Config.DisableIPC).
func (e *Engine) RemoveBackend(t core.BackendType) error {
	if t == core.BackendXGMI && e.ipc != nil {
		return core.Errorf(core.ErrInvalidArgs, "remove backend %s: the same-host GPU path cannot be removed (disable it when creating the engine)", t)
	}
	e.mu.Lock()
	b := e.data
	if b == nil || b.Type() != t {
		e.mu.Unlock()
		return nil
	}
	e.data = nil
	e.rdmaFallback = ""
	e.backends = slices.DeleteFunc(slices.Clone(e.backends), func(x core.Backend) bool { return x == b })
	e.desc.Backends = slices.DeleteFunc(slices.Clone(e.desc.Backends), func(x core.BackendBlob) bool { return x.Type == t })
	remotes := make([]*remote, 0, len(e.remotes))
	for _, r := range e.remotes {
		remotes = append(remotes, r)
	}
	e.mu.Unlock()
	for _, r := range remotes {
		r.forgetConnection()
	}
	e.log.Info("data plane removed", "backend", t.String())
	return b.Close()
}
