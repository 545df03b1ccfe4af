package control

import (
	"errors"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/mori-go/mori-go/core"
	"github.com/mori-go/mori-go/core/tlsconf"
	"github.com/mori-go/mori-go/core/tlsconf/tlstest"
)

const callTimeout = 10 * time.Second

// handler records what it is asked and answers from its fields.
type handler struct {
	mu      sync.Mutex
	me      core.EngineDesc
	hellos  []core.EngineDesc
	notes   []string
	refuse  error
	backend func(from string, msg []byte) ([]byte, error)
}

func (h *handler) Hello(peer core.EngineDesc) (core.EngineDesc, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.hellos = append(h.hellos, peer)
	if h.refuse != nil {
		return core.EngineDesc{}, h.refuse
	}
	return h.me, nil
}

func (h *handler) Notify(from string, msg []byte) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.notes = append(h.notes, from+":"+string(msg))
	return h.refuse
}

func (h *handler) Backend(from string, msg []byte) ([]byte, error) {
	if h.backend == nil {
		return nil, errors.New("no backend")
	}
	return h.backend(from, msg)
}

func (h *handler) calls() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return len(h.hellos) + len(h.notes)
}

// listen starts a control plane over ZeroMQ.
func listen(t *testing.T, key string, secret []byte) (*Server, *handler) {
	t.Helper()
	return listenOn(t, key, secret, nil)
}

// listenOn starts a control plane over TLS with pair, over ZeroMQ if nil.
func listenOn(t *testing.T, key string, secret []byte, pair *tlsconf.Pair) (*Server, *handler) {
	t.Helper()
	h := &handler{me: core.EngineDesc{Key: key, Host: "127.0.0.1", PID: 7, Backends: []core.BackendBlob{{Type: core.BackendTCP, Data: []byte{1, 2}}}}}
	s, err := Listen("127.0.0.1", 0, secret, pair, h, slog.New(slog.DiscardHandler))
	require.NoError(t, err)
	t.Cleanup(func() { require.NoError(t, s.Close()) })
	require.NotZero(t, s.Port())
	h.me.Port = uint16(s.Port())
	return s, h
}

// transports names the two transports; pair returns an engine's TLS
// identity (nil over ZeroMQ).
func transports(t *testing.T) map[string]func(name string) *tlsconf.Pair {
	ca := newCA(t, "engines")
	return map[string]func(string) *tlsconf.Pair{
		"zmq": func(string) *tlsconf.Pair { return nil },
		"tls": func(name string) *tlsconf.Pair { return ca.pair(t, name) },
	}
}

func TestHelloNotifyBackendRoundTrip(t *testing.T) {
	for name, pair := range transports(t) {
		t.Run(name, func(t *testing.T) { roundTrip(t, pair) })
	}
}

func roundTrip(t *testing.T, pair func(string) *tlsconf.Pair) {
	a, _ := listenOn(t, "a", nil, pair("a"))
	b, hb := listenOn(t, "b", nil, pair("b"))
	require.Equal(t, pair("x") != nil, a.TLS())
	hb.backend = func(from string, msg []byte) ([]byte, error) { return append([]byte(from+">"), msg...), nil }
	c := NewClient(a, nil)
	me := core.EngineDesc{Key: "a", Host: "127.0.0.1", Port: uint16(a.Port()), NodeID: "n1"}

	peer, err := c.Hello("127.0.0.1", b.Port(), me, callTimeout)
	require.NoError(t, err)
	require.Equal(t, hb.me.Key, peer.Key)
	require.Equal(t, hb.me.Port, peer.Port)
	require.Equal(t, []byte{1, 2}, peer.Blob(core.BackendTCP))
	require.Len(t, hb.hellos, 1)
	require.Equal(t, "a", hb.hellos[0].Key)
	require.Equal(t, "n1", hb.hellos[0].NodeID)

	require.NoError(t, c.Notify("", b.Port(), "a", []byte("kv ready"), callTimeout))
	require.Equal(t, []string{"a:kv ready"}, hb.notes)

	out, err := c.Backend("127.0.0.1", b.Port(), "a", []byte("qpn=5"), callTimeout)
	require.NoError(t, err)
	require.Equal(t, "a>qpn=5", string(out))

	kind, body, err := c.Call("127.0.0.1", b.Port(), KindPing, nil, callTimeout)
	require.NoError(t, err)
	require.Equal(t, KindPong, kind)
	require.Empty(t, body)

	// Refusals come back as ErrRemote with the callee's message.
	hb.mu.Lock()
	hb.refuse = errors.New("not today")
	hb.mu.Unlock()
	_, err = c.Hello("127.0.0.1", b.Port(), me, callTimeout)
	require.ErrorContains(t, err, "refused HELLO: not today")
	require.Equal(t, core.ErrRemote, core.CodeOf(err))
	hb.backend = nil
	_, err = c.Backend("127.0.0.1", b.Port(), "a", nil, callTimeout)
	require.ErrorContains(t, err, "no backend")

	// The client refuses to send what the server could not take.
	err = c.Notify("127.0.0.1", b.Port(), "a", make([]byte, MaxMessage), callTimeout)
	require.ErrorContains(t, err, "notification of")
	require.Equal(t, core.ErrInvalidArgs, core.CodeOf(err))
	_, err = c.Hello("127.0.0.1", b.Port(), core.EngineDesc{}, callTimeout)
	require.ErrorContains(t, err, "empty key")
}

func TestSharedSecret(t *testing.T) {
	for name, pair := range transports(t) {
		t.Run(name, func(t *testing.T) { sharedSecret(t, pair) })
	}
}

func sharedSecret(t *testing.T, pair func(string) *tlsconf.Pair) {
	secret := []byte("s3cret")
	a, _ := listenOn(t, "a", secret, pair("a"))
	b, hb := listenOn(t, "b", secret, pair("b"))
	me := core.EngineDesc{Key: "a"}

	_, err := NewClient(a, secret).Hello("127.0.0.1", b.Port(), me, callTimeout)
	require.NoError(t, err)
	require.Equal(t, 1, hb.calls())

	for name, s := range map[string][]byte{"wrong secret": []byte("guess"), "no secret": nil} {
		t.Run(name, func(t *testing.T) {
			c := NewClient(a, s)
			_, err := c.Hello("127.0.0.1", b.Port(), me, callTimeout)
			require.ErrorContains(t, err, "authentication failed")
			err = c.Notify("127.0.0.1", b.Port(), "a", []byte("x"), callTimeout)
			require.ErrorContains(t, err, "authentication failed")
			require.Equal(t, 1, hb.calls(), "the handler never saw a request without a valid MAC")
		})
	}

	// A caller with a secret talking to an engine with none.
	open, ho := listenOn(t, "open", nil, pair("open"))
	_, err = NewClient(a, secret).Hello("127.0.0.1", open.Port(), me, callTimeout)
	require.ErrorContains(t, err, "authentication failed")
	require.Equal(t, 0, ho.calls())
}

func TestCloseIsIdempotentAndListenRefusesATakenPort(t *testing.T) {
	for name, pair := range transports(t) {
		t.Run(name, func(t *testing.T) {
			s, err := Listen("127.0.0.1", 0, nil, pair("s"), &handler{}, slog.New(slog.DiscardHandler))
			require.NoError(t, err)
			_, err = Listen("127.0.0.1", s.Port(), nil, pair("t"), &handler{}, slog.New(slog.DiscardHandler))
			require.ErrorContains(t, err, "bind")
			require.Equal(t, core.ErrConnection, core.CodeOf(err))
			require.NoError(t, s.Close())
			require.NoError(t, s.Close())
		})
	}
}

// testCA wraps tlstest.CA for tests.
type testCA struct{ *tlstest.CA }

func newCA(t *testing.T, name string) testCA {
	t.Helper()
	ca, err := tlstest.NewCA(name)
	require.NoError(t, err)
	return testCA{ca}
}

func (ca testCA) pair(t *testing.T, name string) *tlsconf.Pair {
	t.Helper()
	p, err := ca.Pair(name)
	require.NoError(t, err)
	return p
}
