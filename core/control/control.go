// Package control is the engines' control plane over ZeroMQ: the handshake
// that registering a remote engine performs, and small notifications between
// engines. Bulk data never travels here; it goes over a data-plane backend.
//
// Each engine binds one ROUTER socket. A request is a multipart message
// [kind, body]; the reply is [kind, body] too. Kinds: HELLO (body: the
// caller's packed EngineDesc; reply WELCOME with the callee's), NOTIFY
// (body: sender key and message; reply OK), PING (reply PONG), and ERROR
// replies carrying a message. With a shared secret every body is followed by
// an HMAC-SHA256 of kind and body, and requests without a valid one are
// refused. Inbound messages are bounded (MaxMessage) and decoded with the
// same bounded decoders as everything else from the network.
package control

import (
	"crypto/hmac"
	"crypto/sha256"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"syscall"
	"time"

	zmq "github.com/pebbe/zmq4"
	"golang.org/x/sys/unix"

	"github.com/mori-go/mori-go/core"
)

// Message kinds.
const (
	KindHello   = "HELLO"
	KindWelcome = "WELCOME"
	KindNotify  = "NOTIFY"
	KindOK      = "OK"
	KindPing    = "PING"
	KindPong    = "PONG"
	KindError   = "ERROR"
	// KindBackend carries a data-plane backend's set-up message; the reply
	// is KindBackend too.
	KindBackend = "BACKEND"
)

// MaxMessage bounds a control message; libzmq drops peers that send more.
const MaxMessage = 64 << 10

// Handler answers requests. It runs on the server's goroutine.
type Handler interface {
	// Hello is called when a peer registers this engine; it returns this
	// engine's descriptor or refuses.
	Hello(peer core.EngineDesc) (core.EngineDesc, error)
	// Notify delivers a notification from the engine with key from.
	Notify(from string, msg []byte) error
	// Backend answers a data-plane backend's set-up message.
	Backend(from string, msg []byte) ([]byte, error)
}

// Server is the ROUTER socket of one engine.
type Server struct {
	ctx    *zmq.Context
	sock   *zmq.Socket
	h      Handler
	secret []byte
	log    *slog.Logger
	port   int
	file   *os.File // duplicate of the socket's signalling descriptor
	stop   chan struct{}
	done   chan struct{}
}

// Listen binds host:port (port 0 picks a free one) and serves in a
// goroutine until Close.
func Listen(host string, port int, secret []byte, h Handler, log *slog.Logger) (*Server, error) {
	ctx, err := zmq.NewContext()
	if err != nil {
		return nil, core.Errorf(core.ErrInternal, "control plane: zmq context: %w", err)
	}
	s := &Server{ctx: ctx, h: h, secret: secret, log: log, stop: make(chan struct{}), done: make(chan struct{})}
	ready := make(chan error, 1)
	go s.run(host, port, ready)
	if err := <-ready; err != nil {
		ctx.Term()
		return nil, err
	}
	return s, nil
}

// Port is the port the control plane listens on.
func (s *Server) Port() int { return s.port }

// Context is the zmq context that clients of this engine share.
func (s *Server) Context() *zmq.Context { return s.ctx }

// run owns the ROUTER socket: zmq sockets must stay on one goroutine.
func (s *Server) run(host string, port int, ready chan<- error) {
	defer close(s.done)
	sock, err := s.ctx.NewSocket(zmq.ROUTER)
	if err == nil {
		err = errors.Join(sock.SetLinger(0), sock.SetMaxmsgsize(MaxMessage), sock.SetRcvhwm(1024))
	}
	if err != nil {
		ready <- core.Errorf(core.ErrInternal, "control plane: socket: %w", err)
		return
	}
	defer sock.Close()
	ep := fmt.Sprintf("tcp://%s:%d", bindHost(host), port)
	if port == 0 {
		ep = fmt.Sprintf("tcp://%s:*", bindHost(host))
	}
	if err := sock.Bind(ep); err != nil {
		ready <- core.Errorf(core.ErrConnection, "control plane: bind %s: %w", ep, err)
		return
	}
	last, err := sock.GetLastEndpoint()
	if err == nil {
		_, err = fmt.Sscanf(last[strings.LastIndex(last, ":")+1:], "%d", &s.port)
	}
	if err != nil {
		ready <- core.Errorf(core.ErrInternal, "control plane: read bound port of %s: %w", ep, err)
		return
	}
	s.sock = sock
	// Wait for requests in Go's network poller, on a duplicate of the
	// socket's signalling descriptor, rather than in zmq_poll: a goroutine
	// blocked in a cgo call holds its scheduler slot until the runtime takes
	// it back (up to milliseconds later), which starves the data plane's
	// goroutines on small machines.
	fd, err := sock.GetFd()
	var file *os.File
	if err == nil {
		var dup int
		if dup, err = unix.Dup(fd); err == nil {
			unix.SetNonblock(dup, true)
			file = os.NewFile(uintptr(dup), "zmq-control")
		}
	}
	var rc syscall.RawConn
	if err == nil {
		rc, err = file.SyscallConn()
	}
	if err != nil {
		ready <- core.Errorf(core.ErrInternal, "control plane: watch socket descriptor: %w", err)
		return
	}
	s.file = file
	ready <- nil
	rc.Read(func(uintptr) bool {
		for {
			select {
			case <-s.stop:
				return true
			default:
			}
			ev, err := sock.GetEvents()
			if err != nil {
				return true // context terminated
			}
			if ev&zmq.POLLIN == 0 {
				return false // wait until the descriptor signals again
			}
			parts, err := sock.RecvMessageBytes(zmq.DONTWAIT)
			if err != nil || len(parts) < 1 {
				continue
			}
			reply := s.handle(parts[1:])
			out := append([][]byte{parts[0]}, reply...)
			if _, err := sock.SendMessageDontwait(out); err != nil {
				s.log.Debug("control plane: reply dropped", "err", err)
			}
		}
	})
}

func bindHost(h string) string {
	if h == "" {
		return "127.0.0.1"
	}
	return h
}

// handle decodes one request and returns the reply frames.
func (s *Server) handle(parts [][]byte) [][]byte {
	kind, body, err := open(parts, s.secret)
	if err != nil {
		s.log.Warn("control plane: refused a request", "err", err)
		return seal(KindError, []byte(err.Error()), s.secret)
	}
	switch kind {
	case KindPing:
		return seal(KindPong, nil, s.secret)
	case KindHello:
		var peer core.EngineDesc
		if err := peer.UnmarshalBinary(body); err != nil {
			return seal(KindError, []byte("hello: "+err.Error()), s.secret)
		}
		me, err := s.h.Hello(peer)
		if err != nil {
			return seal(KindError, []byte(err.Error()), s.secret)
		}
		b, err := me.MarshalBinary()
		if err != nil {
			return seal(KindError, []byte(err.Error()), s.secret)
		}
		return seal(KindWelcome, b, s.secret)
	case KindNotify:
		from, msg, err := decodeNotify(body)
		if err == nil {
			err = s.h.Notify(from, msg)
		}
		if err != nil {
			return seal(KindError, []byte(err.Error()), s.secret)
		}
		return seal(KindOK, nil, s.secret)
	case KindBackend:
		from, msg, err := decodeNotify(body)
		var out []byte
		if err == nil {
			out, err = s.h.Backend(from, msg)
		}
		if err != nil {
			return seal(KindError, []byte(err.Error()), s.secret)
		}
		return seal(KindBackend, out, s.secret)
	}
	return seal(KindError, []byte(fmt.Sprintf("unknown request kind %q", kind)), s.secret)
}

// Close stops the server and terminates the zmq context.
func (s *Server) Close() error {
	select {
	case <-s.stop:
		return nil
	default:
	}
	close(s.stop)
	s.file.Close() // wakes the serving goroutine
	<-s.done
	return s.ctx.Term()
}

func mac(secret []byte, kind string, body []byte) []byte {
	m := hmac.New(sha256.New, secret)
	m.Write([]byte(kind))
	m.Write([]byte{0})
	m.Write(body)
	return m.Sum(nil)
}

// seal builds the frames of a message, with its MAC when there is a secret.
func seal(kind string, body []byte, secret []byte) [][]byte {
	parts := [][]byte{[]byte(kind), body}
	if len(secret) > 0 {
		parts = append(parts, mac(secret, kind, body))
	}
	return parts
}

// open checks the frames of a message and returns its kind and body.
func open(parts [][]byte, secret []byte) (string, []byte, error) {
	want := 2
	if len(secret) > 0 {
		want = 3
	}
	if len(parts) != want {
		if len(parts) == 2 && want == 3 {
			return "", nil, fmt.Errorf("authentication failed: message carries no MAC and this engine requires the shared secret")
		}
		if len(parts) == 3 && want == 2 {
			return "", nil, fmt.Errorf("authentication failed: message carries a MAC: the peer uses a shared secret and this engine has none")
		}
		return "", nil, fmt.Errorf("%w: %d frames, want %d", core.ErrMalformed, len(parts), want)
	}
	kind := string(parts[0])
	if len(kind) > 16 {
		return "", nil, fmt.Errorf("%w: message kind of %d bytes", core.ErrMalformed, len(kind))
	}
	if want == 3 && !hmac.Equal(parts[2], mac(secret, kind, parts[1])) {
		return "", nil, fmt.Errorf("authentication failed: wrong shared secret")
	}
	return kind, parts[1], nil
}

func encodeNotify(from string, msg []byte) []byte {
	b := []byte{byte(len(from)), byte(len(from) >> 8)}
	b = append(b, from...)
	return append(b, msg...)
}

func decodeNotify(b []byte) (string, []byte, error) {
	if len(b) < 2 {
		return "", nil, fmt.Errorf("notify: %w: %d bytes", core.ErrMalformed, len(b))
	}
	n := int(b[0]) | int(b[1])<<8
	if n == 0 || n > core.MaxKeyLen || len(b)-2 < n {
		return "", nil, fmt.Errorf("notify: %w: sender key of %d bytes in %d", core.ErrMalformed, n, len(b))
	}
	return string(b[2 : 2+n]), b[2+n:], nil
}

// Client sends requests to other engines' control planes. It is safe for
// concurrent use: each call uses its own short-lived DEALER socket.
type Client struct {
	ctx    *zmq.Context
	secret []byte
}

// NewClient returns a client sharing the server's zmq context.
func NewClient(s *Server, secret []byte) *Client { return &Client{ctx: s.ctx, secret: secret} }

// Call sends one request to host:port and waits up to timeout for the reply.
func (c *Client) Call(host string, port int, kind string, body []byte, timeout time.Duration) (string, []byte, error) {
	ep := fmt.Sprintf("tcp://%s:%d", bindHost(host), port)
	sock, err := c.ctx.NewSocket(zmq.DEALER)
	if err != nil {
		return "", nil, core.Errorf(core.ErrInternal, "control plane: socket: %w", err)
	}
	defer sock.Close()
	if err := errors.Join(sock.SetLinger(0), sock.SetMaxmsgsize(MaxMessage), sock.Connect(ep)); err != nil {
		return "", nil, core.Errorf(core.ErrConnection, "control plane: connect %s: %w", ep, err)
	}
	parts := seal(kind, body, c.secret)
	if _, err := sock.SendMessage(parts); err != nil {
		return "", nil, core.Errorf(core.ErrConnection, "control plane: send %s to %s: %w", kind, ep, err)
	}
	poller := zmq.NewPoller()
	poller.Add(sock, zmq.POLLIN)
	polled, err := poller.Poll(timeout)
	if err != nil {
		return "", nil, core.Errorf(core.ErrConnection, "control plane: wait for %s: %w", ep, err)
	}
	if len(polled) == 0 {
		return "", nil, core.Errorf(core.ErrTimeout, "control plane: no answer from %s to %s within %s", ep, kind, timeout)
	}
	reply, err := sock.RecvMessageBytes(0)
	if err != nil {
		return "", nil, core.Errorf(core.ErrConnection, "control plane: receive from %s: %w", ep, err)
	}
	rk, rb, err := open(reply, c.secret)
	if err != nil {
		return "", nil, core.Errorf(core.ErrConnection, "control plane: reply from %s: %w", ep, err)
	}
	if rk == KindError {
		return rk, rb, core.Errorf(core.ErrRemote, "engine at %s refused %s: %s", ep, kind, rb)
	}
	return rk, rb, nil
}

// Hello registers this engine (me) with the engine at host:port and returns
// that engine's descriptor.
func (c *Client) Hello(host string, port int, me core.EngineDesc, timeout time.Duration) (core.EngineDesc, error) {
	var peer core.EngineDesc
	b, err := me.MarshalBinary()
	if err != nil {
		return peer, err
	}
	kind, body, err := c.Call(host, port, KindHello, b, timeout)
	if err != nil {
		return peer, err
	}
	if kind != KindWelcome {
		return peer, core.Errorf(core.ErrConnection, "control plane: %s:%d answered %s to HELLO", host, port, kind)
	}
	if err := peer.UnmarshalBinary(body); err != nil {
		return peer, core.Errorf(core.ErrConnection, "control plane: welcome from %s:%d: %w", host, port, err)
	}
	return peer, nil
}

// Backend sends a backend set-up message to the engine at host:port, as
// engine from, and returns the answer.
func (c *Client) Backend(host string, port int, from string, msg []byte, timeout time.Duration) ([]byte, error) {
	if len(msg) > MaxMessage-core.MaxKeyLen-64 {
		return nil, core.Errorf(core.ErrInvalidArgs, "backend message of %d bytes, at most %d", len(msg), MaxMessage-core.MaxKeyLen-64)
	}
	kind, body, err := c.Call(host, port, KindBackend, encodeNotify(from, msg), timeout)
	if err == nil && kind != KindBackend {
		err = core.Errorf(core.ErrConnection, "control plane: %s:%d answered %s to BACKEND", host, port, kind)
	}
	return body, err
}

// Notify sends msg to the engine at host:port, as engine from.
func (c *Client) Notify(host string, port int, from string, msg []byte, timeout time.Duration) error {
	if len(msg) > MaxMessage-core.MaxKeyLen-64 {
		return core.Errorf(core.ErrInvalidArgs, "notification of %d bytes, at most %d", len(msg), MaxMessage-core.MaxKeyLen-64)
	}
	_, _, err := c.Call(host, port, KindNotify, encodeNotify(from, msg), timeout)
	return err
}
