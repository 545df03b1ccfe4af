package engine

import (
	"fmt"

	"github.com/mori-go/mori-go/core"
)

// RegisterRemoteEngine makes a peer known and connects to it at once: the
// control-plane handshake, then the data plane's connections, so that the
// first transfer pays no set-up cost.
func (e *Engine) RegisterRemoteEngine(d core.EngineDesc) error {
	if err := d.Validate(); err != nil {
		return err
	}
	e.mu.RLock()
	data := e.data
	me := e.desc
	e.mu.RUnlock()
	if data == nil {
		return core.Errorf(core.ErrBadState, "register remote engine %q: create a backend first", d.Key)
	}
	peer, err := e.client.Hello(d.Host, int(d.Port), me, e.cfg.HandshakeTimeout)
	if err != nil {
		return fmt.Errorf("register remote engine %q at %s:%d: %w", d.Key, d.Host, d.Port, err)
	}
	if peer.Key != d.Key {
		return core.Errorf(core.ErrInvalidArgs, "register remote engine %q: %s:%d is engine %q", d.Key, d.Host, d.Port, peer.Key)
	}
	e.adm.Register(d.Key)
	if err := data.AddPeer(d); err != nil {
		return fmt.Errorf("register remote engine %q: %w", d.Key, err)
	}
	if e.ipc != nil {
		if err := e.ipc.AddPeer(d); err != nil {
			return fmt.Errorf("register remote engine %q: %w", d.Key, err)
		}
	}
	e.mu.Lock()
	e.remotes[d.Key] = d
	e.mu.Unlock()
	e.log.Debug("remote engine registered", "peer", d.Key, "host", d.Host)
	return nil
}

// DeregisterRemoteEngine forgets a peer; its transfers in flight fail.
func (e *Engine) DeregisterRemoteEngine(d core.EngineDesc) error {
	e.mu.Lock()
	_, ok := e.remotes[d.Key]
	delete(e.remotes, d.Key)
	data := e.data
	e.mu.Unlock()
	if !ok {
		return core.Errorf(core.ErrNotFound, "deregister remote engine %q: not registered", d.Key)
	}
	e.adm.Unregister(d.Key)
	if data != nil {
		data.RemovePeer(d.Key)
	}
	if e.ipc != nil {
		e.ipc.RemovePeer(d.Key)
	}
	e.inbound.FailPeer(d.Key, fmt.Sprintf("remote engine %q was deregistered", d.Key))
	return nil
}
