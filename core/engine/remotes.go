package engine

import (
	"fmt"
	"sync"
	"time"

	"github.com/mori-go/mori-go/core"
)

// Backoff between connection attempts to a peer that could not be
// reached: the first transfer after a failure tries again only once it has
// passed, and it doubles up to its maximum.
const (
	firstBackoff = 200 * time.Millisecond
	maxBackoff   = 10 * time.Second
)

// remote is a registered peer and the state of the connection to it. One
// connection attempt at a time runs per peer, on a goroutine of its own;
// transfers that arrive meanwhile wait for its outcome (in waiting), not
// on a goroutine each.
type remote struct {
	key string

	mu         sync.Mutex
	desc       core.EngineDesc
	gen        uint64 // bumped by each registration, so an attempt knows it is stale
	connecting bool
	connected  bool
	err        error     // why the last attempt failed
	retryAt    time.Time // no new attempt before this, after a failure
	backoff    time.Duration
	removed    bool
	waiting    []func(error)
	attempted  chan struct{} // closed when the attempt for gen ends
}

// AddRemoteEngine makes a peer known and returns at once, as MORI-IO's
// register_remote_engine does: the connection (control-plane handshake,
// then the data plane's connections) is made in the background. A
// transfer to the peer waits for it; when it failed, the first transfer
// after a backoff tries again, and a failure fails the transfer, not the
// registration. Registering a peer again (a restarted peer has a new
// descriptor) connects to the new descriptor.
func (e *Engine) AddRemoteEngine(d core.EngineDesc) error {
	_, _, err := e.addRemote(d)
	return err
}

// RegisterRemoteEngine makes a peer known and connects to it before it
// returns. When the connection fails the registration is undone and the
// error says why: a new peer is forgotten again, a peer registered before
// keeps its previous descriptor and connection. (AddRemoteEngine is the
// form that does not wait.)
func (e *Engine) RegisterRemoteEngine(d core.EngineDesc) error {
	r, prev, err := e.addRemote(d)
	if err != nil {
		return err
	}
	r.mu.Lock()
	done, gen := r.attempted, r.gen
	r.mu.Unlock()
	<-done
	r.mu.Lock()
	err = r.err
	if err == nil || r.gen != gen { // connected, or registered again meanwhile
		r.mu.Unlock()
		return err
	}
	if prev.known {
		r.desc, r.connected, r.err, r.retryAt, r.backoff = prev.desc, prev.connected, nil, time.Time{}, 0
		r.mu.Unlock()
		return err
	}
	r.mu.Unlock()
	e.mu.Lock()
	if e.remotes[d.Key] == r {
		delete(e.remotes, d.Key)
	}
	e.mu.Unlock()
	r.remove(nil)
	return err
}

// previous is what a registration replaced.
type previous struct {
	known     bool
	desc      core.EngineDesc
	connected bool
}

func (e *Engine) addRemote(d core.EngineDesc) (*remote, previous, error) {
	if err := d.Validate(); err != nil {
		return nil, previous{}, err
	}
	e.mu.Lock()
	if e.data == nil {
		e.mu.Unlock()
		return nil, previous{}, core.Errorf(core.ErrBadState, "register remote engine %q: create a backend first", d.Key)
	}
	r := e.remotes[d.Key]
	known := r != nil
	if !known {
		r = &remote{key: d.Key}
		e.remotes[d.Key] = r
	}
	e.mu.Unlock()
	r.mu.Lock()
	prev := previous{known: known, desc: r.desc, connected: r.connected}
	r.desc = d
	r.gen++
	r.connected, r.err, r.retryAt, r.backoff = false, nil, time.Time{}, 0
	start := !r.connecting
	if start { // else the attempt in progress goes on with this descriptor
		r.attempted = make(chan struct{})
	}
	r.connecting = true
	r.mu.Unlock()
	if start {
		go e.connectLoop(r)
	}
	e.log.Debug("remote engine registered", "peer", d.Key, "host", d.Host)
	return r, prev, nil
}

// connectLoop connects r's current descriptor, again while registrations
// replace it, and hands the outcome to the transfers waiting.
func (e *Engine) connectLoop(r *remote) {
	for {
		r.mu.Lock()
		d, gen := r.desc, r.gen
		r.mu.Unlock()
		err := e.connect(d)
		r.mu.Lock()
		if r.removed {
			r.connecting = false
			close(r.attempted)
			r.mu.Unlock()
			e.disconnect(r.key) // what this attempt opened after the deregistration
			return
		}
		if gen != r.gen {
			r.mu.Unlock()
			continue
		}
		r.connecting, r.connected, r.err = false, err == nil, err
		if err != nil {
			r.backoff = min(max(2*r.backoff, firstBackoff), maxBackoff)
			r.retryAt = time.Now().Add(r.backoff)
			e.log.Warn("remote engine unreachable; transfers to it fail until a later one connects",
				"peer", r.key, "host", d.Host, "retry_after", r.backoff.String(), "err", err)
		} else {
			r.backoff = 0
		}
		waiting := r.waiting
		r.waiting = nil
		close(r.attempted)
		r.mu.Unlock()
		for _, f := range waiting {
			f(err)
		}
		return
	}
}

// connect runs the handshake with d and opens the data plane's
// connections.
func (e *Engine) connect(d core.EngineDesc) error {
	e.mu.RLock()
	data := e.data
	me := e.desc
	e.mu.RUnlock()
	if data == nil {
		return core.Errorf(core.ErrBadState, "remote engine %q: no backend (removed): create one first", d.Key)
	}
	peer, err := e.client.Hello(d.Host, int(d.Port), me, e.cfg.HandshakeTimeout)
	if err != nil {
		return fmt.Errorf("remote engine %q at %s:%d: %w", d.Key, d.Host, d.Port, err)
	}
	if peer.Key != d.Key {
		return core.Errorf(core.ErrInvalidArgs, "remote engine %q: %s:%d is engine %q", d.Key, d.Host, d.Port, peer.Key)
	}
	e.adm.Register(d.Key)
	if err := data.AddPeer(d); err != nil {
		return fmt.Errorf("remote engine %q: %w", d.Key, err)
	}
	if e.ipc != nil {
		if err := e.ipc.AddPeer(d); err != nil {
			return fmt.Errorf("remote engine %q: %w", d.Key, err)
		}
	}
	return nil
}

// whenConnected calls f once r is connected (f(nil)) or cannot be (f with
// the reason): at once when the outcome is known, else when the attempt
// in progress, or one started now, ends.
func (e *Engine) whenConnected(r *remote, f func(error)) {
	r.mu.Lock()
	switch {
	case r.removed:
		r.mu.Unlock()
		f(core.Errorf(core.ErrNotFound, "remote engine %q is not registered", r.key))
	case r.connected:
		r.mu.Unlock()
		f(nil)
	case r.connecting:
		r.waiting = append(r.waiting, f)
		r.mu.Unlock()
	case r.err != nil && time.Now().Before(r.retryAt):
		err := r.err
		wait := time.Until(r.retryAt).Round(time.Millisecond)
		r.mu.Unlock()
		f(core.Errorf(core.CodeOf(err), "not connected (next attempt in %s): %v", wait, err))
	default:
		r.connecting = true
		r.attempted = make(chan struct{})
		r.waiting = append(r.waiting, f)
		r.mu.Unlock()
		go e.connectLoop(r)
	}
}

// isConnected reports whether transfers to r may be routed at once.
func (r *remote) isConnected() bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.connected && !r.removed
}

// remove marks r removed and fails the transfers waiting for it.
func (r *remote) remove(why error) {
	r.mu.Lock()
	r.removed = true
	waiting := r.waiting
	r.waiting = nil
	r.mu.Unlock()
	if why == nil {
		why = core.Errorf(core.ErrNotFound, "remote engine %q was deregistered", r.key)
	}
	for _, f := range waiting {
		f(why)
	}
}

// disconnect closes the data planes' connections to a peer.
func (e *Engine) disconnect(key string) {
	e.mu.RLock()
	data := e.data
	e.mu.RUnlock()
	e.adm.Unregister(key)
	if data != nil {
		data.RemovePeer(key)
	}
	if e.ipc != nil {
		e.ipc.RemovePeer(key)
	}
}

// DeregisterRemoteEngine forgets a peer; its transfers in flight fail.
// Forgetting a peer that is not registered does nothing, as in MORI-IO.
func (e *Engine) DeregisterRemoteEngine(d core.EngineDesc) error {
	e.mu.Lock()
	r, ok := e.remotes[d.Key]
	delete(e.remotes, d.Key)
	e.mu.Unlock()
	if !ok {
		e.log.Debug("deregister remote engine: not registered (nothing to do)", "peer", d.Key)
		return nil
	}
	r.remove(nil)
	e.disconnect(d.Key)
	e.inbound.FailPeer(d.Key, fmt.Sprintf("remote engine %q was deregistered", d.Key))
	return nil
}

// remoteDesc returns the descriptor of a registered peer.
func (e *Engine) remoteDesc(key string) (core.EngineDesc, bool) {
	e.mu.RLock()
	r, ok := e.remotes[key]
	e.mu.RUnlock()
	if !ok {
		return core.EngineDesc{}, false
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.desc, true
}

// forgetConnection makes the next transfer connect again (the data plane
// was replaced).
func (r *remote) forgetConnection() {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.connected, r.err, r.retryAt, r.backoff = false, nil, time.Time{}, 0
}
