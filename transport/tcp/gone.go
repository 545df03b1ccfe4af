package tcp

import (
	"io"
	"net"
	"syscall"

	"golang.org/x/sys/unix"

	"github.com/mori-go/mori-go/core"
)

// errInitiatorGone: the initiator closed or reset the connection; what is
// still buffered belongs to transfers it already reported failed (it
// resets a stream with frames in flight when it fails it), and none of it
// may land.
var errInitiatorGone = core.Errorf(core.ErrConnection, "the initiator closed or reset the connection; the bytes still buffered are dropped, not written")

// goneReader reads a TCP connection and asks the kernel, after each read
// of the socket, whether the initiator is still there (the connection
// still established); the serving loop asks again (gone) before it lands
// bytes it read earlier. Without the checks, a target stopped (SIGSTOP),
// starved or merely a few milliseconds behind would write into memory the
// frames its kernel received before the initiator gave up on them: a reset
// does not discard bytes already received, and the initiator, having
// reported those transfers failed, may already have handed the memory to
// a new transfer (the one-hour soak caught exactly that: a write reported
// successful, then overwritten by the late bytes of a failed one).
//
// What is left: bytes read from the socket while the connection was still
// established are landed even when the reset arrives while they are being
// copied, a window of the copy of one read (at most the read buffer, 64
// KiB, or one readv straight into the ranges: ReadVec). Over TLS the check comes
// before each read, not after the wait for data: a read already waiting
// takes in what arrived meanwhile (TLS records are read whole), so the
// protection is partial there.
type goneReader struct {
	raw syscall.RawConn // the TCP socket; nil: not a socket (no check)
	c   net.Conn        // what is read: the socket, or TLS over it
	tls bool            // c is a layer over the socket
}

// newGoneReader reads c, which is plain or a layer (TLS) over plain.
func newGoneReader(plain, c net.Conn) *goneReader {
	r := &goneReader{c: c, tls: c != plain}
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
		if r.gone() {
			return 0, errInitiatorGone
		}
		return r.c.Read(p)
	}
	return r.readSocket(p, nil)
}

// ReadVec reads into bufs in order (a readv(2) of up to maxIovecs of them,
// iov its scratch), with the check of Read after the read. Over TLS, or on
// what is not a socket, it is a Read into the first buffer.
func (r *goneReader) ReadVec(bufs [][]byte, iov []unix.Iovec) (int, error) {
	if r.raw == nil || r.tls || len(bufs) == 1 {
		return r.Read(bufs[0])
	}
	iov = appendIovecs(iov[:0], bufs)
	n, err := r.readSocket(nil, iov)
	clear(iov) // no pointers into the region kept past the call
	return n, err
}

// readSocket reads the plain socket into p, or with readv(2) into iov when
// iov is not empty, waiting in the netpoller while it has nothing, and
// asks after a read whether the initiator is still there.
func (r *goneReader) readSocket(p []byte, iov []unix.Iovec) (int, error) {
	var n int
	var err error
	rerr := r.raw.Read(func(fd uintptr) bool {
		var errno syscall.Errno
		if len(iov) > 0 {
			n, errno = rawVec(unix.SYS_READV, int(fd), iov)
		} else {
			n, errno = rawRead(int(fd), p)
		}
		err = nil
		if errno != 0 {
			err = errno
		}
		if errno == syscall.EAGAIN {
			return false // wait until readable (or the read deadline)
		}
		if n > 0 && initiatorGone(int(fd)) {
			n, err = 0, errInitiatorGone
		}
		return true
	})
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

// plainRaw returns the socket when what is read is the socket itself (not
// TLS over it), else nil.
func (r *goneReader) plainRaw() syscall.RawConn {
	if r.tls {
		return nil
	}
	return r.raw
}

// gone says whether the initiator has closed or reset the connection:
// asked before landing bytes read earlier.
func (r *goneReader) gone() bool {
	if r.raw == nil {
		return false
	}
	gone := false
	r.raw.Control(func(fd uintptr) { gone = initiatorGone(int(fd)) })
	return gone
}

// initiatorGone asks the kernel for the connection's state: anything but
// established means the initiator closed (FIN) or reset (RST) it.
func initiatorGone(fd int) bool {
	state, ok := rawTCPState(fd)
	if !ok {
		return false // cannot tell: go on
	}
	return state != tcpEstablished
}

// tcpEstablished is TCP_ESTABLISHED of linux/tcp_states.h.
const tcpEstablished = 1
