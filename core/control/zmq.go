package control

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	zmq "github.com/pebbe/zmq4"
	"golang.org/x/sys/unix"

	"github.com/mori-go/mori-go/core"
)

// zmqServer is the ZeroMQ transport's serving side: one ROUTER socket.
type zmqServer struct {
	ctx    *zmq.Context
	r      *responder
	log    *slog.Logger
	bound  int
	file   *os.File // duplicate of the socket's signalling descriptor
	stop   chan struct{}
	done   chan struct{}
	closed atomic.Bool
}

func listenZMQ(host string, port int, r *responder, log *slog.Logger) (*zmqServer, error) {
	ctx, err := zmq.NewContext()
	if err != nil {
		return nil, core.Errorf(core.ErrInternal, "control plane: zmq context: %w", err)
	}
	s := &zmqServer{ctx: ctx, r: r, log: log, stop: make(chan struct{}), done: make(chan struct{})}
	ready := make(chan error, 1)
	go s.run(host, port, ready)
	if err := <-ready; err != nil {
		ctx.Term()
		return nil, err
	}
	return s, nil
}

func (s *zmqServer) port() int       { return s.bound }
func (s *zmqServer) refused() uint64 { return 0 }

// zapDomain is set on the ROUTER socket only for what it turns off:
// libzmq refuses ZMTP 1.0 and 2.0 peers on a socket with a ZAP domain.
// Those old handshakes are a crash: bytes that are not a ZMTP 3 greeting
// (a TLS ClientHello, say) start the 1.0 handshake, and libzmq 4.3.4 may
// abort the process on it (an assertion in process_routing_id_msg, when
// the routing id arrives before the session's pipe is attached). No ZAP
// handler is bound and the domain is not enforced, so ZMTP 3 peers are
// served as before.
const zapDomain = "mori-go"

// bind makes the ROUTER socket and binds it.
func (s *zmqServer) bind(host string, port int) (*zmq.Socket, error) {
	sock, err := s.ctx.NewSocket(zmq.ROUTER)
	if err == nil {
		err = errors.Join(sock.SetLinger(0), sock.SetMaxmsgsize(MaxMessage), sock.SetRcvhwm(1024), sock.SetZapDomain(zapDomain))
	}
	if err != nil {
		return nil, core.Errorf(core.ErrInternal, "control plane: socket: %w", err)
	}
	ep := fmt.Sprintf("tcp://%s:%d", bindHost(host), port)
	if port == 0 {
		ep = fmt.Sprintf("tcp://%s:*", bindHost(host))
	}
	if err := sock.Bind(ep); err != nil {
		sock.Close()
		return nil, core.Errorf(core.ErrConnection, "control plane: bind %s: %w", ep, err)
	}
	last, err := sock.GetLastEndpoint()
	if err == nil {
		_, err = fmt.Sscanf(last[strings.LastIndex(last, ":")+1:], "%d", &s.bound)
	}
	if err != nil {
		sock.Close()
		return nil, core.Errorf(core.ErrInternal, "control plane: read bound port of %s: %w", ep, err)
	}
	return sock, nil
}

// watch returns a duplicate of the socket's signalling descriptor, to wait
// for requests in Go's network poller rather than in zmq_poll: a goroutine
// blocked in a cgo call holds its scheduler slot until the runtime takes
// it back (up to milliseconds later), which starves the data plane's
// goroutines on small machines.
func watch(sock *zmq.Socket) (*os.File, syscall.RawConn, error) {
	fd, err := sock.GetFd()
	if err != nil {
		return nil, nil, err
	}
	dup, err := unix.Dup(fd)
	if err != nil {
		return nil, nil, err
	}
	unix.SetNonblock(dup, true)
	file := os.NewFile(uintptr(dup), "zmq-control")
	rc, err := file.SyscallConn()
	if err != nil {
		file.Close()
		return nil, nil, err
	}
	return file, rc, nil
}

// run owns the ROUTER socket: zmq sockets must stay on one goroutine.
func (s *zmqServer) run(host string, port int, ready chan<- error) {
	defer close(s.done)
	sock, err := s.bind(host, port)
	if err != nil {
		ready <- err
		return
	}
	defer sock.Close()
	file, rc, err := watch(sock)
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
			reply := s.r.respond(parts[1:])
			out := append([][]byte{parts[0]}, reply...)
			if _, err := sock.SendMessageDontwait(out); err != nil {
				s.log.Debug("control plane: reply dropped", "err", err)
			}
		}
	})
}

// close stops the server and terminates the zmq context.
func (s *zmqServer) close() error {
	if s.closed.Swap(true) {
		return nil
	}
	close(s.stop)
	s.file.Close() // wakes the serving goroutine
	<-s.done
	return s.ctx.Term()
}

// zmqCaller is the ZeroMQ transport's calling side: each call uses its own
// short-lived DEALER socket.
type zmqCaller struct {
	ctx *zmq.Context
}

func (c *zmqCaller) close() {} // the server terminates the shared context

// tlsProbeAfter is how long a call waits for its reply before it also
// checks whether the peer speaks TLS instead (see probeTLS).
const tlsProbeAfter = 100 * time.Millisecond

func (c *zmqCaller) call(host string, port int, parts [][]byte, timeout time.Duration) ([][]byte, error) {
	deadline := time.Now().Add(timeout)
	ep := fmt.Sprintf("tcp://%s:%d", bindHost(host), port)
	sock, err := c.ctx.NewSocket(zmq.DEALER)
	if err != nil {
		return nil, core.Errorf(core.ErrInternal, "control plane: socket: %w", err)
	}
	defer sock.Close()
	if err := errors.Join(sock.SetLinger(0), sock.SetMaxmsgsize(MaxMessage), sock.Connect(ep)); err != nil {
		return nil, core.Errorf(core.ErrConnection, "control plane: connect %s: %w", ep, err)
	}
	kind := string(parts[0])
	if _, err := sock.SendMessage(parts); err != nil {
		return nil, core.Errorf(core.ErrConnection, "control plane: send %s to %s: %w", kind, ep, err)
	}
	if err := c.await(sock, endpoint(host, port), deadline); err != nil {
		if core.CodeOf(err) == core.ErrTimeout {
			return nil, core.Errorf(core.ErrTimeout, "control plane: no answer from %s to %s within %s", ep, kind, timeout)
		}
		return nil, err
	}
	reply, err := sock.RecvMessageBytes(0)
	if err != nil {
		return nil, core.Errorf(core.ErrConnection, "control plane: receive from %s: %w", ep, err)
	}
	return reply, nil
}

// await waits until sock has the reply, or the deadline passes (an
// ErrTimeout), or the peer turns out to speak TLS (a TLS mismatch).
// Replies normally come in well under tlsProbeAfter; past it, the wait
// goes on in short polls while the probe runs.
func (c *zmqCaller) await(sock *zmq.Socket, addr string, deadline time.Time) error {
	poller := zmq.NewPoller()
	poller.Add(sock, zmq.POLLIN)
	ctx, cancel := context.WithDeadline(context.Background(), deadline)
	defer cancel() // ends a probe still running
	probe := make(chan error, 1)
	probing := false
	for {
		left := time.Until(deadline)
		if left <= 0 {
			return core.Errorf(core.ErrTimeout, "no answer")
		}
		polled, err := poller.Poll(min(left, tlsProbeAfter))
		if err != nil {
			return core.Errorf(core.ErrConnection, "control plane: wait for %s: %w", addr, err)
		}
		if len(polled) > 0 {
			return nil
		}
		if !probing {
			probing = true
			go func() { probe <- probeTLS(ctx, addr) }()
			continue
		}
		select {
		case err := <-probe:
			if err != nil {
				return err
			}
		default:
		}
	}
}
