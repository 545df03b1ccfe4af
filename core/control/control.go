// Package control is the engines' control plane: the handshake that
// registering a remote engine performs (HELLO), small notifications
// between engines (NOTIFY), and the data-plane backends' set-up messages
// (BACKEND). Bulk data never travels here; it goes over a data-plane
// backend.
//
// A request is a message of parts [kind, body]; the reply is [kind, body]
// too. Kinds: HELLO (body: the caller's packed EngineDesc; reply WELCOME
// with the callee's), NOTIFY (body: sender key and message; reply OK),
// BACKEND (sender key and message; reply BACKEND), PING (reply PONG), and
// ERROR replies carrying a message. With a shared secret every body is
// followed by an HMAC-SHA256 of kind and body, and requests without a
// valid one are refused. Inbound messages are bounded (MaxMessage) and
// decoded with the same bounded decoders as everything else from the
// network.
//
// The messages travel over one of two transports, on the engine's control
// port:
//
//   - ZeroMQ (zmq.go), in clear text, when the engine has no TLS: one
//     ROUTER socket per engine, a short-lived DEALER per call.
//   - TLS 1.3 (tls_server.go, tls_client.go), when the engine has a TLS
//     identity (tlsconf.Pair): mutually authenticated against the
//     engine's CA with the data plane's certificates, each message a
//     length-prefixed frame (frame.go), connections kept per peer.
//
// An engine with TLS and one without cannot talk: the call fails with an
// error that says so (mismatch.go) within its timeout.
package control

import (
	"log/slog"
	"sync"
	"time"

	"github.com/mori-go/mori-go/core"
	"github.com/mori-go/mori-go/core/tlsconf"
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

// MaxMessage bounds a control message; libzmq drops peers that send more,
// the TLS transport answers ERROR and closes the connection.
const MaxMessage = 64 << 10

// Handler answers requests. Calls are serialised: one request is handled
// at a time, whichever transport carries it.
type Handler interface {
	// Hello is called when a peer registers this engine; it returns this
	// engine's descriptor or refuses.
	Hello(peer core.EngineDesc) (core.EngineDesc, error)
	// Notify delivers a notification from the engine with key from.
	Notify(from string, msg []byte) error
	// Backend answers a data-plane backend's set-up message.
	Backend(from string, msg []byte) ([]byte, error)
}

// listener is the serving side of a transport.
type listener interface {
	port() int
	// refused counts connections refused before a request was read (TLS
	// handshake failed, over a connection limit).
	refused() uint64
	close() error
}

// caller is the calling side of a transport: it sends one request's parts
// and returns the reply's parts.
type caller interface {
	call(host string, port int, parts [][]byte, timeout time.Duration) ([][]byte, error)
	close()
}

// Server is the control plane of one engine.
type Server struct {
	l   listener
	zmq *zmqServer    // the ZeroMQ transport, nil with TLS
	tls *tlsconf.Pair // the TLS identity, nil without

	mu      sync.Mutex
	clients []*Client
	closed  bool
}

// Listen binds host:port (port 0 picks a free one) and serves in the
// background until Close. With tls set the control plane runs over TLS
// 1.3 (pair.Server accepts, pair.Client dials), otherwise over ZeroMQ.
func Listen(host string, port int, secret []byte, tls *tlsconf.Pair, h Handler, log *slog.Logger) (*Server, error) {
	r := &responder{h: h, secret: secret, log: log}
	if tls != nil {
		l, err := listenTLS(host, port, tls.Server, r, log, defaultTLSLimits)
		if err != nil {
			return nil, err
		}
		return &Server{l: l, tls: tls}, nil
	}
	z, err := listenZMQ(host, port, r, log)
	if err != nil {
		return nil, err
	}
	return &Server{l: z, zmq: z}, nil
}

// Port is the port the control plane listens on.
func (s *Server) Port() int { return s.l.port() }

// TLS reports whether the control plane runs over TLS.
func (s *Server) TLS() bool { return s.tls != nil }

// Refused counts connections refused before a request was read: failed
// TLS handshakes (another CA, no certificate, a peer without TLS) and
// connections over a limit. Always 0 over ZeroMQ.
func (s *Server) Refused() uint64 { return s.l.refused() }

// Close stops the server and closes the connections of its clients.
// Calls made after it fail.
func (s *Server) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	clients := s.clients
	s.mu.Unlock()
	for _, c := range clients {
		c.t.close()
	}
	return s.l.close()
}

func bindHost(h string) string {
	if h == "" {
		return "127.0.0.1"
	}
	return h
}
