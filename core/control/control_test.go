package control

import (
	"bytes"
	"errors"
	"log/slog"
	"net"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	zmq "github.com/pebbe/zmq4"
	"github.com/stretchr/testify/require"

	"github.com/mori-go/mori-go/core"
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

func listen(t *testing.T, key string, secret []byte) (*Server, *handler) {
	t.Helper()
	h := &handler{me: core.EngineDesc{Key: key, Host: "127.0.0.1", PID: 7, Backends: []core.BackendBlob{{Type: core.BackendTCP, Data: []byte{1, 2}}}}}
	s, err := Listen("127.0.0.1", 0, secret, h, slog.New(slog.DiscardHandler))
	require.NoError(t, err)
	t.Cleanup(func() { require.NoError(t, s.Close()) })
	require.NotZero(t, s.Port())
	h.me.Port = uint16(s.Port())
	return s, h
}

func TestHelloNotifyBackendRoundTrip(t *testing.T) {
	a, _ := listen(t, "a", nil)
	b, hb := listen(t, "b", nil)
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
	secret := []byte("s3cret")
	a, _ := listen(t, "a", secret)
	b, hb := listen(t, "b", secret)
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
	open, ho := listen(t, "open", nil)
	_, err = NewClient(a, secret).Hello("127.0.0.1", open.Port(), me, callTimeout)
	require.ErrorContains(t, err, "authentication failed")
	require.Equal(t, 0, ho.calls())
}

// rawDealer is a DEALER socket sending arbitrary multipart messages.
func rawDealer(t *testing.T, s *Server) *zmq.Socket {
	t.Helper()
	sock, err := s.Context().NewSocket(zmq.DEALER)
	require.NoError(t, err)
	t.Cleanup(func() { sock.Close() })
	require.NoError(t, sock.SetLinger(0))
	require.NoError(t, sock.SetRcvtimeo(callTimeout))
	require.NoError(t, sock.SetSndtimeo(callTimeout))
	require.NoError(t, sock.Connect("tcp://127.0.0.1:"+strconv.Itoa(s.Port())))
	return sock
}

func TestGarbageGetsAnErrorReplyAndTheServerGoesOn(t *testing.T) {
	for _, secret := range [][]byte{nil, []byte("k")} {
		s, h := listen(t, "target", secret)
		sock := rawDealer(t, s)
		desc, err := (&core.EngineDesc{Key: "x"}).MarshalBinary()
		require.NoError(t, err)
		garbage := [][][]byte{
			{{}},
			{[]byte("PING")},
			{[]byte("PING"), nil, nil, nil},
			{bytes.Repeat([]byte("K"), 17), nil},
			{[]byte("HELLO"), []byte("garbage")},
			{[]byte("HELLO"), append(desc, 0)},
			{[]byte("HELLO"), desc[:len(desc)-1]},
			{[]byte("NOTIFY"), []byte{5}},
			{[]byte("NOTIFY"), []byte{0, 0, 'x'}},
			{[]byte("NOTIFY"), []byte{0xff, 0xff, 'x'}},
			{[]byte("BACKEND"), []byte{9, 0, 'a'}},
			{[]byte("WELCOME"), nil},
			{{0xff, 0xfe, 0x00}, {0x01}},
		}
		if secret != nil {
			for i := range garbage {
				if len(garbage[i]) == 2 {
					garbage[i] = append(garbage[i], make([]byte, 32)) // a bad MAC
				}
			}
		}
		for i, msg := range garbage {
			parts := make([]any, len(msg))
			for j, p := range msg {
				parts[j] = p
			}
			_, err := sock.SendMessage(parts...)
			require.NoError(t, err, "message %d", i)
			reply, err := sock.RecvMessageBytes(0)
			require.NoError(t, err, "no reply to garbage message %d", i)
			require.Equal(t, KindError, string(reply[0]), "message %d", i)
			require.NotEmpty(t, reply[1], "an error reply says why")
			if secret != nil {
				require.Len(t, reply, 3, "error replies are sealed too")
			}
		}
		require.Zero(t, h.calls(), "garbage never reaches the handler")

		// Still serving, on the same socket and on a new one.
		_, err = sock.SendMessage(seal(KindPing, nil, secret))
		require.NoError(t, err)
		reply, err := sock.RecvMessageBytes(0)
		require.NoError(t, err)
		require.Equal(t, KindPong, string(reply[0]))
		c := NewClient(s, secret)
		_, err = c.Hello("127.0.0.1", s.Port(), core.EngineDesc{Key: "x"}, callTimeout)
		require.NoError(t, err)
	}
}

func TestOversizedMessageDoesNotStopTheServer(t *testing.T) {
	s, h := listen(t, "target", nil)
	sock := rawDealer(t, s)
	// libzmq drops a peer that sends more than MaxMessage; no reply comes.
	_, err := sock.SendMessage("NOTIFY", make([]byte, 2*MaxMessage))
	require.NoError(t, err)
	_, err = NewClient(s, nil).Hello("127.0.0.1", s.Port(), core.EngineDesc{Key: "x"}, callTimeout)
	require.NoError(t, err)
	require.Equal(t, 1, h.calls())
}

func TestCallToAClosedPortTimesOut(t *testing.T) {
	s, _ := listen(t, "a", nil)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	port := ln.Addr().(*net.TCPAddr).Port
	require.NoError(t, ln.Close())

	const timeout = 200 * time.Millisecond
	done := make(chan error, 1)
	go func() {
		_, _, err := NewClient(s, nil).Call("127.0.0.1", port, KindPing, nil, timeout)
		done <- err
	}()
	select {
	case err := <-done:
		require.Error(t, err)
		require.Equal(t, core.ErrTimeout, core.CodeOf(err), "%v", err)
		require.ErrorContains(t, err, "no answer from")
	case <-time.After(timeout + callTimeout):
		t.Fatal("Call did not return after its timeout")
	}
}

func TestCloseIsIdempotentAndListenRefusesATakenPort(t *testing.T) {
	s, err := Listen("127.0.0.1", 0, nil, &handler{}, slog.New(slog.DiscardHandler))
	require.NoError(t, err)
	_, err = Listen("127.0.0.1", s.Port(), nil, &handler{}, slog.New(slog.DiscardHandler))
	require.ErrorContains(t, err, "bind")
	require.Equal(t, core.ErrConnection, core.CodeOf(err))
	require.NoError(t, s.Close())
	require.NoError(t, s.Close())
}

func TestSealOpen(t *testing.T) {
	for _, secret := range [][]byte{nil, []byte("k")} {
		kind, body, err := open(seal(KindNotify, []byte("b"), secret), secret)
		require.NoError(t, err)
		require.Equal(t, KindNotify, kind)
		require.Equal(t, []byte("b"), body)
	}
	_, _, err := open(seal(KindNotify, []byte("b"), []byte("k")), []byte("other"))
	require.ErrorContains(t, err, "authentication failed: wrong shared secret")
	_, _, err = open(seal(KindNotify, []byte("b"), nil), []byte("k"))
	require.ErrorContains(t, err, "authentication failed: message carries no MAC")
	_, _, err = open(seal(KindNotify, []byte("b"), []byte("k")), nil)
	require.ErrorContains(t, err, "authentication failed: message carries a MAC")
	// The MAC binds kind to body.
	parts := seal(KindNotify, []byte("b"), []byte("k"))
	parts[0] = []byte(KindPing)
	_, _, err = open(parts, []byte("k"))
	require.ErrorContains(t, err, "authentication failed")

	from, msg, err := decodeNotify(encodeNotify("engine", []byte("hi")))
	require.NoError(t, err)
	require.Equal(t, "engine", from)
	require.Equal(t, []byte("hi"), msg)
	for _, b := range [][]byte{nil, {1}, {0, 0}, {3, 0, 'a'}, {0x01, 0x02, 'a'}} {
		_, _, err := decodeNotify(b)
		require.ErrorIs(t, err, core.ErrMalformed, "%v", b)
	}
}

func FuzzOpen(f *testing.F) {
	f.Add([]byte(KindHello), []byte("body"), []byte{}, uint8(2), false)
	f.Add([]byte(KindHello), []byte("body"), mac([]byte("k"), KindHello, []byte("body")), uint8(3), true)
	f.Add([]byte("PING"), []byte{}, make([]byte, 32), uint8(3), true)
	f.Add(bytes.Repeat([]byte("K"), 17), []byte{}, []byte{}, uint8(2), false)
	f.Add([]byte{}, []byte{}, []byte{}, uint8(0), false)
	f.Fuzz(func(t *testing.T, kind, body, m []byte, n uint8, withSecret bool) {
		var secret []byte
		if withSecret {
			secret = []byte("k")
		}
		parts := [][]byte{kind, body, m, kind}[:min(int(n%5), 4)]
		k, b, err := open(parts, secret)
		if err != nil {
			require.True(t, errors.Is(err, core.ErrMalformed) || strings.HasPrefix(err.Error(), "authentication failed"), "%v", err)
			return
		}
		require.LessOrEqual(t, len(k), 16)
		require.Equal(t, string(parts[0]), k)
		require.Equal(t, parts[1], b)
		if withSecret {
			require.Len(t, parts, 3)
			require.Equal(t, mac(secret, k, b), parts[2], "accepted without the right MAC")
		} else {
			require.Len(t, parts, 2)
		}
	})
}

func FuzzDecodeNotify(f *testing.F) {
	f.Add(encodeNotify("engine", []byte("msg")))
	f.Add(encodeNotify(strings.Repeat("k", core.MaxKeyLen), nil))
	f.Add([]byte{0xff, 0xff})
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, b []byte) {
		from, msg, err := decodeNotify(b)
		if err != nil {
			require.ErrorIs(t, err, core.ErrMalformed)
			return
		}
		require.NotEmpty(t, from)
		require.LessOrEqual(t, len(from), core.MaxKeyLen)
		require.Equal(t, b, encodeNotify(from, msg))
	})
}
