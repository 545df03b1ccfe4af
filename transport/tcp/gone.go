package tcp

import (
	"io"
	"net"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/mori-go/mori-go/core"
)

// goneCheckGap: a read of a stream that comes this long after its previous
// read first asks the kernel whether the initiator closed or reset the
// connection meanwhile. Back to back reads (a stream busy with data) skip
// the question; a process that was stopped or starved longer than this
// asks it before it takes in bytes its kernel buffered meanwhile.
const goneCheckGap = 50 * time.Millisecond

// errInitiatorGone: the initiator closed or reset the connection; what is
// still buffered belongs to transfers it already reported failed (it
// resets a stream with frames in flight when it fails it), and none of it
// may land.
var errInitiatorGone = core.Errorf(core.ErrConnection, "the initiator closed or reset the connection; the bytes still buffered are dropped, not written")

// goneReader reads a TCP connection, after a gap only once the kernel says
// the initiator is still there (the connection still established). Without
// the check, a target stopped (SIGSTOP) or starved past the initiator's
// stall timeout would, once it runs again, write into memory the frames its
// kernel received before the initiator gave up on them: a reset does not
// discard bytes already received.
//
// Over TLS the check comes before each read after a gap, not after the
// wait for data: a read already waiting when the process stopped takes in
// what arrived meanwhile (TLS records are read whole), so the protection
// is partial there.
type goneReader struct {
	raw  syscall.RawConn // the TCP socket; nil: not a socket (no check)
	c    net.Conn        // what is read: the socket, or TLS over it
	tls  bool            // c is a layer over the socket
	last time.Time       // when a read last returned
}

// newGoneReader reads c, which is plain or a layer (TLS) over plain.
func newGoneReader(plain, c net.Conn) *goneReader {
	r := &goneReader{c: c, tls: c != plain, last: time.Now()}
	if sc, ok := plain.(syscall.Conn); ok {
		if raw, err := sc.SyscallConn(); err == nil {
			r.raw = raw
		}
	}
	return r
}

func (r *goneReader) Read(p []byte) (int, error) {
	if r.raw == nil || len(p) == 0 {
		return r.c.Read(p)
	}
	if r.tls {
		// A layer over the socket: check, then read through it.
		if r.stale() {
			return 0, errInitiatorGone
		}
		n, err := r.c.Read(p)
		r.last = time.Now()
		return n, err
	}
	var n int
	var err error
	rerr := r.raw.Read(func(fd uintptr) bool {
		if time.Since(r.last) > goneCheckGap && initiatorGone(int(fd)) {
			n, err = 0, errInitiatorGone
			return true
		}
		for {
			n, err = syscall.Read(int(fd), p)
			if err != syscall.EINTR {
				break
			}
		}
		if err == syscall.EAGAIN {
			return false // wait until readable (or the read deadline)
		}
		return true
	})
	r.last = time.Now()
	switch {
	case rerr != nil: // deadline exceeded, connection closed
		return 0, rerr
	case err != nil:
		return 0, &net.OpError{Op: "read", Net: "tcp", Source: r.c.LocalAddr(), Addr: r.c.RemoteAddr(), Err: err}
	case n == 0:
		return 0, io.EOF
	}
	return n, nil
}

// stale says whether no read returned for goneCheckGap and the initiator
// has gone meanwhile: called before landing bytes read earlier.
func (r *goneReader) stale() bool {
	if r.raw == nil || time.Since(r.last) <= goneCheckGap {
		return false
	}
	gone := false
	r.raw.Control(func(fd uintptr) { gone = initiatorGone(int(fd)) })
	return gone
}

// initiatorGone asks the kernel for the connection's state: anything but
// established means the initiator closed (FIN) or reset (RST) it.
func initiatorGone(fd int) bool {
	info, err := unix.GetsockoptTCPInfo(fd, unix.IPPROTO_TCP, unix.TCP_INFO)
	if err != nil {
		return false // cannot tell: go on
	}
	return info.State != tcpEstablished
}

// tcpEstablished is TCP_ESTABLISHED of linux/tcp_states.h.
const tcpEstablished = 1
