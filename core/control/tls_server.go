package control

import (
	"context"
	"crypto/tls"
	"errors"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/mori-go/mori-go/core"
)

// tlsLimits bounds the TLS transport.
type tlsLimits struct {
	// Server side.
	HandshakeTimeout  time.Duration // to finish the TLS handshake
	IdleTimeout       time.Duration // between requests on one connection
	RequestTimeout    time.Duration // to read the rest of a started request, and to write a reply
	MaxConns          int           // connections at once, all peers
	MaxPendingPerHost int           // connections from one remote IP still in the TLS handshake
	// Client side.
	IdlePerPeer int           // idle connections kept per peer for reuse
	ClientIdle  time.Duration // an idle connection older than this is closed, not reused
}

// defaultTLSLimits are the limits engines run with. A client lets go of an
// idle connection well before the server would (ClientIdle < IdleTimeout),
// so that a reused connection is not closed under a request.
var defaultTLSLimits = tlsLimits{
	HandshakeTimeout:  5 * time.Second,
	IdleTimeout:       2 * time.Minute,
	RequestTimeout:    10 * time.Second,
	MaxConns:          1024,
	MaxPendingPerHost: 64,
	IdlePerPeer:       2,
	ClientIdle:        30 * time.Second,
}

// tlsServer is the TLS transport's serving side: one goroutine per
// connection, each reading a request frame and writing the reply frame in
// turn.
type tlsServer struct {
	ln  net.Listener
	cfg *tls.Config
	r   *responder
	log *slog.Logger
	lim tlsLimits

	refusedN atomic.Uint64
	wg       sync.WaitGroup

	mu      sync.Mutex
	conns   map[net.Conn]struct{}
	pending map[string]int // connections in the handshake, per remote IP
	closed  bool
}

func listenTLS(host string, port int, base *tls.Config, r *responder, log *slog.Logger, lim tlsLimits) (*tlsServer, error) {
	addr := endpoint(host, port)
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, core.Errorf(core.ErrConnection, "control plane: bind %s: %w", addr, err)
	}
	cfg := base.Clone()
	cfg.NextProtos = []string{alpn}
	cfg.SessionTicketsDisabled = true // a client keeps its connections instead
	s := &tlsServer{ln: ln, cfg: cfg, r: r, log: log, lim: lim,
		conns: make(map[net.Conn]struct{}), pending: make(map[string]int)}
	s.wg.Add(1)
	go s.accept()
	return s, nil
}

func (s *tlsServer) port() int       { return s.ln.Addr().(*net.TCPAddr).Port }
func (s *tlsServer) refused() uint64 { return s.refusedN.Load() }

func (s *tlsServer) accept() {
	defer s.wg.Done()
	for {
		c, err := s.ln.Accept()
		if errors.Is(err, net.ErrClosed) {
			return
		}
		if err != nil { // out of descriptors, for one: let some close
			s.log.Warn("control plane: accept", "err", err)
			time.Sleep(50 * time.Millisecond)
			continue
		}
		host := remoteIP(c)
		if !s.admit(c, host) {
			s.refusedN.Add(1)
			s.log.Warn("control plane: connection refused: over a connection limit", "remote", c.RemoteAddr())
			c.Close()
			continue
		}
		s.wg.Add(1)
		go s.serve(c, host)
	}
}

// admit counts c in, unless a limit is reached or the server is closed.
func (s *tlsServer) admit(c net.Conn, host string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed || len(s.conns) >= s.lim.MaxConns || s.pending[host] >= s.lim.MaxPendingPerHost {
		return false
	}
	s.conns[c] = struct{}{}
	s.pending[host]++
	return true
}

func (s *tlsServer) handshakeOver(host string) {
	s.mu.Lock()
	if s.pending[host]--; s.pending[host] <= 0 {
		delete(s.pending, host)
	}
	s.mu.Unlock()
}

func (s *tlsServer) release(c net.Conn) {
	s.mu.Lock()
	delete(s.conns, c)
	s.mu.Unlock()
	c.Close()
}

// serve runs the handshake on c, then answers its requests until the peer
// closes it, stays idle past IdleTimeout, or breaks the framing.
func (s *tlsServer) serve(c net.Conn, host string) {
	defer s.wg.Done()
	defer s.release(c)
	tc := tls.Server(c, s.cfg)
	ctx, cancel := context.WithTimeout(context.Background(), s.lim.HandshakeTimeout)
	err := tc.HandshakeContext(ctx)
	cancel()
	s.handshakeOver(host)
	if err != nil {
		s.refusedN.Add(1)
		s.log.Warn("control plane: TLS handshake refused", "remote", c.RemoteAddr(), "err", err)
		return
	}
	var out []byte
	for {
		reply, ok := s.next(tc)
		if reply == nil {
			return
		}
		tc.SetWriteDeadline(time.Now().Add(s.lim.RequestTimeout))
		out = appendFrame(out[:0], reply)
		if _, err := tc.Write(out); err != nil || !ok {
			return
		}
	}
}

// next reads one request and returns the reply: nil when the connection
// ended, and ok false when the reply is the last one (the framing broke).
func (s *tlsServer) next(tc *tls.Conn) (reply [][]byte, ok bool) {
	tc.SetReadDeadline(time.Now().Add(s.lim.IdleTimeout))
	n, err := readFrameLength(tc)
	var size errFrameSize
	if errors.As(err, &size) {
		s.log.Warn("control plane: refused a request", "remote", tc.RemoteAddr(), "err", err)
		return s.r.fail(err), false
	}
	if err != nil {
		return nil, false
	}
	tc.SetReadDeadline(time.Now().Add(s.lim.RequestTimeout))
	parts, err := readFrameBody(tc, n)
	if errors.Is(err, core.ErrMalformed) { // the frame was read whole: go on
		s.log.Warn("control plane: refused a request", "remote", tc.RemoteAddr(), "err", err)
		return s.r.fail(err), true
	}
	if err != nil {
		return nil, false
	}
	return s.r.respond(parts), true
}

// close stops accepting, closes every connection and waits for their
// goroutines.
func (s *tlsServer) close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	for c := range s.conns {
		c.Close()
	}
	s.mu.Unlock()
	err := s.ln.Close()
	s.wg.Wait()
	return err
}

func remoteIP(c net.Conn) string {
	if a, ok := c.RemoteAddr().(*net.TCPAddr); ok {
		return a.IP.String()
	}
	return c.RemoteAddr().String()
}
