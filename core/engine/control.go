package engine

import (
	"encoding/binary"
	"sync"
	"time"

	"github.com/mori-go/mori-go/core"
)

// ctlHandler answers the control plane on the engine's behalf.
type ctlHandler Engine

func (h *ctlHandler) Hello(peer core.EngineDesc) (core.EngineDesc, error) {
	e := (*Engine)(h)
	e.log.Debug("hello from a remote engine", "peer", peer.Key, "host", peer.Host)
	e.adm.Greeted(peer.Key)
	return e.Desc(), nil
}

func (h *ctlHandler) Notify(from string, msg []byte) error {
	(*Engine)(h).notes.push(Notification{From: from, Data: append([]byte(nil), msg...)})
	return nil
}

// Backend hands a backend message to the local backend of the type in its
// first byte (see Engine.env).
func (h *ctlHandler) Backend(from string, msg []byte) ([]byte, error) {
	e := (*Engine)(h)
	if len(msg) == 0 {
		return nil, core.Errorf(core.ErrInvalidArgs, "empty backend message from %q", from)
	}
	if err := e.adm.Check(from); err != nil {
		return nil, err
	}
	t := core.BackendType(msg[0])
	e.mu.RLock()
	backends := e.backends
	e.mu.RUnlock()
	for _, b := range backends {
		if ch, ok := b.(core.ControlHandler); ok && b.Type() == t {
			return ch.HandleControl(from, msg[1:])
		}
	}
	return nil, core.Errorf(core.ErrBadState, "engine %q has no %s backend that takes set-up messages", e.cfg.Key, t)
}

// Notification is a small message from another engine.
type Notification struct {
	From string
	Data []byte
}

// notifications is a bounded queue: past its capacity the oldest are dropped.
type notifications struct {
	mu      sync.Mutex
	cap     int
	q       []Notification
	dropped uint64
}

func newNotifications(capacity int) *notifications { return &notifications{cap: capacity} }

func (n *notifications) push(m Notification) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if len(n.q) >= n.cap {
		n.q = n.q[1:]
		n.dropped++
	}
	n.q = append(n.q, m)
}

func (n *notifications) peek() []Notification {
	n.mu.Lock()
	defer n.mu.Unlock()
	return append([]Notification(nil), n.q...)
}

// drop forgets the k oldest notifications.
func (n *notifications) drop(k int) {
	n.mu.Lock()
	defer n.mu.Unlock()
	k = min(k, len(n.q))
	n.q = n.q[k:]
}

// Notify sends a small message to a registered remote engine over the
// control plane.
func (e *Engine) Notify(remote string, msg []byte) error {
	d, ok := e.remoteDesc(remote)
	if !ok {
		return core.Errorf(core.ErrNotFound, "notify %q: remote engine not registered", remote)
	}
	return e.client.Notify(d.Host, int(d.Port), e.cfg.Key, msg, 5*time.Second)
}

// PeekNotifications returns the notifications received so far, oldest
// first, without forgetting them.
func (e *Engine) PeekNotifications() []Notification { return e.notes.peek() }

// DropNotifications forgets the k oldest notifications.
func (e *Engine) DropNotifications(k int) { e.notes.drop(k) }

// PopNotifications returns and forgets the notifications received so far.
func (e *Engine) PopNotifications() []Notification {
	q := e.notes.peek()
	e.notes.drop(len(q))
	return q
}

// PackNotifications encodes notifications as mg_pop_notifications hands
// them over: repeated [u16 sender key length][sender key][u32 data
// length][data], little-endian.
func PackNotifications(notes []Notification) []byte {
	var b []byte
	for _, m := range notes {
		b = binary.LittleEndian.AppendUint16(b, uint16(len(m.From)))
		b = append(b, m.From...)
		b = binary.LittleEndian.AppendUint32(b, uint32(len(m.Data)))
		b = append(b, m.Data...)
	}
	return b
}
