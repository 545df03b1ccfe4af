package control

import (
	"crypto/tls"
	"errors"
	"net"
	"os"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/mori-go/mori-go/core"
)

// tlsCaller is the TLS transport's calling side. A call takes an idle
// connection to the peer or dials a new one (TCP and TLS handshake within
// the call's timeout), writes the request frame, reads the reply frame
// and puts the connection back for the next call to that peer (up to
// IdlePerPeer idle ones each, none older than ClientIdle). Calls are not
// retried: NOTIFY and backend set-up messages must not be delivered
// twice. A connection the peer closed while it was idle is found before
// reuse (a non-blocking peek at the socket) and dropped.
type tlsCaller struct {
	cfg *tls.Config
	lim tlsLimits

	mu     sync.Mutex
	idle   map[string][]idleConn // by peer address
	closed bool
}

type idleConn struct {
	tc    *tls.Conn
	raw   net.Conn
	since time.Time
}

func newTLSCaller(base *tls.Config, lim tlsLimits) *tlsCaller {
	cfg := base.Clone()
	cfg.NextProtos = []string{alpn}
	return &tlsCaller{cfg: cfg, lim: lim, idle: make(map[string][]idleConn)}
}

func (c *tlsCaller) call(host string, port int, parts [][]byte, timeout time.Duration) ([][]byte, error) {
	addr := endpoint(host, port)
	kind := string(parts[0])
	deadline := time.Now().Add(timeout)
	conn, err := c.get(addr, deadline)
	if err != nil {
		if errors.Is(err, os.ErrDeadlineExceeded) {
			return nil, core.Errorf(core.ErrTimeout, "control plane: no TLS connection to %s for %s within %s: %w", addr, kind, timeout, err)
		}
		return nil, err
	}
	conn.raw.SetDeadline(deadline)
	reply, err := exchange(conn.tc, parts)
	if err != nil {
		conn.raw.Close()
		switch {
		case errors.Is(err, os.ErrDeadlineExceeded):
			return nil, core.Errorf(core.ErrTimeout, "control plane: no answer from %s to %s within %s", addr, kind, timeout)
		case isRemoteAlert(err):
			return nil, describeTLSFailure(addr, err)
		}
		return nil, core.Errorf(core.ErrConnection, "control plane: %s to %s: %w", kind, addr, err)
	}
	c.put(addr, conn)
	return reply, nil
}

// exchange writes one request and reads its reply.
func exchange(tc *tls.Conn, parts [][]byte) ([][]byte, error) {
	if _, err := tc.Write(appendFrame(nil, parts)); err != nil {
		// A peer that refused the certificate has sent an alert and closed;
		// the write may fail first. Read the alert, which says more.
		var b [1]byte
		if _, rerr := tc.Read(b[:]); isRemoteAlert(rerr) {
			return nil, rerr
		}
		return nil, err
	}
	return readFrame(tc)
}

// get returns an idle connection to addr that is still open, or dials one.
func (c *tlsCaller) get(addr string, deadline time.Time) (idleConn, error) {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return idleConn{}, core.Errorf(core.ErrBadState, "control plane: closed")
	}
	for q := c.idle[addr]; len(q) > 0; q = c.idle[addr] {
		conn := q[len(q)-1]
		c.idle[addr] = q[:len(q)-1]
		if time.Since(conn.since) < c.lim.ClientIdle && stillOpen(conn.raw) {
			c.mu.Unlock()
			return conn, nil
		}
		conn.raw.Close()
	}
	delete(c.idle, addr)
	c.mu.Unlock()
	return c.dial(addr, deadline)
}

func (c *tlsCaller) dial(addr string, deadline time.Time) (idleConn, error) {
	d := net.Dialer{Deadline: deadline}
	raw, err := d.Dial("tcp", addr)
	if err != nil {
		if errors.Is(err, os.ErrDeadlineExceeded) {
			return idleConn{}, err
		}
		return idleConn{}, core.Errorf(core.ErrConnection, "control plane: connect %s: %w", addr, err)
	}
	raw.SetDeadline(deadline)
	tc := tls.Client(raw, c.cfg)
	if err := tc.Handshake(); err != nil {
		raw.Close()
		if errors.Is(err, os.ErrDeadlineExceeded) {
			return idleConn{}, err
		}
		return idleConn{}, describeTLSFailure(addr, err)
	}
	return idleConn{tc: tc, raw: raw}, nil
}

// put keeps conn for the next call to addr, or closes it.
func (c *tlsCaller) put(addr string, conn idleConn) {
	conn.raw.SetDeadline(time.Time{})
	conn.since = time.Now()
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed || len(c.idle[addr]) >= c.lim.IdlePerPeer {
		conn.raw.Close()
		return
	}
	c.idle[addr] = append(c.idle[addr], conn)
}

// close closes the idle connections; later calls fail.
func (c *tlsCaller) close() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.closed = true
	for addr, q := range c.idle {
		for _, conn := range q {
			conn.raw.SetWriteDeadline(time.Now().Add(100 * time.Millisecond))
			conn.tc.Close() // tells the server with a close_notify
		}
		delete(c.idle, addr)
	}
}

// stillOpen reports whether an idle connection can carry a request: the
// peer has neither closed it nor sent anything (an idle connection gets
// nothing but a close_notify). One non-blocking peek.
func stillOpen(raw net.Conn) bool {
	sc, ok := raw.(syscall.Conn)
	if !ok {
		return false
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return false
	}
	open := false
	rc.Read(func(fd uintptr) bool {
		var b [1]byte
		_, _, err := unix.Recvfrom(int(fd), b[:], unix.MSG_PEEK|unix.MSG_DONTWAIT)
		open = errors.Is(err, unix.EAGAIN)
		return true
	})
	return open
}
