package tcp

import (
	"net"
	"syscall"

	"golang.org/x/sys/unix"

	"github.com/mori-go/mori-go/core"
	"github.com/mori-go/mori-go/transport/compress"
)

// Inline writes. A small frame submitted to an idle stream is written by
// the submitting goroutine itself (stream.enqueue), which saves waking the
// writer goroutine. That write must never wait for the socket: Submit
// would block for as long as the link takes to drain (seconds on a lossy
// link, with the transfer's deadline not yet armed for the requests after
// it). So the submitter writes what the socket takes at once and hands the
// rest of the frame to the writer goroutine, which sends it before
// anything else queued on the stream.
//
// Inline writes need the socket itself: over TLS every frame goes through
// the writer goroutine.

// handoff is the rest of an inline write that the socket did not take:
// its iovecs, the regions they point into (each holding a Use) and the
// compressed frames whose buffers they are.
type handoff struct {
	bufs    net.Buffers
	used    []*core.Region
	cframes []*compress.Frame
}

// release drops what the handoff holds, once written or abandoned.
func (h *handoff) release() {
	for _, r := range h.used {
		r.Release()
	}
	for _, cf := range h.cframes {
		cf.Release()
	}
}

// maxIovecs is the most iovecs passed to one writev (IOV_MAX).
const maxIovecs = 1024

// writeNow writes as much of bufs as the socket takes without waiting and
// returns the rest (empty when all of it went).
func (s *stream) writeNow(bufs net.Buffers) (net.Buffers, error) {
	rest, err := s.writeRaw(bufs, false)
	if err != nil {
		return nil, s.connErr("write", err)
	}
	return rest, nil
}

// writeAll writes bufs whole, as the stream's writer does: raw writev(2)
// calls (rawsys.go), waiting in the netpoller while the socket is full.
// An ordinary system call per write would tell the scheduler, whose
// monitor thread then hands the writer's processor to another thread
// whenever a large write's copy lasts over 20 µs, and keeps waking every
// 20 µs while that goes on. Over TLS (no raw socket) it is bufs.WriteTo.
// bufs is consumed.
func (s *stream) writeAll(bufs net.Buffers) error {
	if s.raw == nil {
		_, err := bufs.WriteTo(s.c)
		return err
	}
	_, err := s.writeRaw(bufs, true)
	return err
}

// writeRaw writes bufs with raw writev(2) calls on the socket until all
// of it went or, when the socket is full, returns the rest (wait false) or
// waits in the netpoller for room (wait true).
func (s *stream) writeRaw(bufs net.Buffers, wait bool) (net.Buffers, error) {
	var werr error
	err := s.raw.Write(func(fd uintptr) bool {
		for len(bufs) > 0 {
			n, errno := s.writev(fd, bufs)
			switch errno {
			case 0:
				bufs = advance(bufs, n)
			case syscall.EINTR:
			case syscall.EAGAIN:
				return !wait // full: hand the rest back, or wait for room (or the close)
			default:
				werr = errno
				return true
			}
		}
		return true
	})
	if err == nil {
		err = werr
	}
	return bufs, err
}

// writev is one writev(2) of up to maxIovecs of bufs.
func (s *stream) writev(fd uintptr, bufs net.Buffers) (int, syscall.Errno) {
	iov := appendIovecs(s.iovecs[:0], bufs)
	s.iovecs = iov
	n, errno := rawVec(unix.SYS_WRITEV, int(fd), iov) // non-blocking: rawsys.go
	clear(iov)                                        // no pointers into frames kept past the call
	return n, errno
}

// advance drops the first n bytes of bufs.
func advance(bufs net.Buffers, n int) net.Buffers {
	for len(bufs) > 0 && n >= len(bufs[0]) {
		n -= len(bufs[0])
		bufs = bufs[1:]
	}
	if n > 0 {
		bufs[0] = bufs[0][n:]
	}
	return bufs
}

// newHandoff takes over the rest of an inline write: copies of its
// iovecs and region list (the stream's scratch is reused), and the
// compressed frames of the batch, so that the batch's end releases none of
// them.
func (s *stream) newHandoff(rest net.Buffers, used []*core.Region) *handoff {
	h := &handoff{bufs: append(net.Buffers(nil), rest...), used: append([]*core.Region(nil), used...), cframes: s.cframes}
	s.cframes = nil
	return h
}

// sendHandoff writes the rest of an inline write, waiting for the socket
// as the writer goroutine does, and releases what it held.
func (s *stream) sendHandoff(h *handoff) error {
	defer h.release()
	if err := s.writeAll(h.bufs); err != nil {
		return s.connErr("write", err)
	}
	return nil
}
