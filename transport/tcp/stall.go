package tcp

import (
	"net"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// stallReader refreshes a read deadline at each read while armed, so that
// a peer that stops sending in the middle of a frame is cut off after the
// stall timeout, while an idle stream between frames waits for ever.
type stallReader struct {
	c     net.Conn
	in    *goneReader // reads c
	stall time.Duration
	armed bool
}

func (r *stallReader) Read(p []byte) (int, error) {
	if r.armed {
		r.c.SetReadDeadline(time.Now().Add(r.stall))
	}
	return r.in.Read(p)
}

// ReadVec is Read into several buffers (goneReader.ReadVec).
func (r *stallReader) ReadVec(bufs [][]byte, iov []unix.Iovec) (int, error) {
	if r.armed {
		r.c.SetReadDeadline(time.Now().Add(r.stall))
	}
	return r.in.ReadVec(bufs, iov)
}

func (r *stallReader) arm(on bool) {
	r.armed = on
	if !on {
		r.c.SetReadDeadline(time.Time{})
	}
}

// stallWriteChunk is the most bytes written under one write deadline.
const stallWriteChunk = 1 << 20

// stallWriter writes with a write deadline refreshed every stallWriteChunk
// bytes, so that a peer that stops reading its responses is cut off after
// the stall timeout. Without it such a peer would block the stream for
// ever, while holding a Use of the region it reads (deregistration of the
// region would hang).
type stallWriter struct {
	c     net.Conn
	raw   syscall.RawConn // the socket when c is one (not TLS): raw writes
	stall time.Duration
}

func (w *stallWriter) Write(p []byte) (int, error) {
	n := 0
	for n < len(p) {
		k := min(len(p)-n, stallWriteChunk)
		w.c.SetWriteDeadline(time.Now().Add(w.stall))
		m, err := w.write(p[n : n+k])
		n += m
		if err != nil {
			return n, err
		}
	}
	return n, nil
}

// write writes p whole (waiting in the netpoller for room, up to the write
// deadline), with raw system calls on a plain socket (rawsys.go).
func (w *stallWriter) write(p []byte) (int, error) {
	if w.raw == nil {
		return w.c.Write(p)
	}
	n := 0
	var errno syscall.Errno
	err := w.raw.Write(func(fd uintptr) bool {
		for n < len(p) {
			var m int
			if m, errno = rawWrite(int(fd), p[n:]); errno != 0 {
				return errno != syscall.EAGAIN // EAGAIN: wait for room
			}
			n += m
		}
		return true
	})
	if err == nil && errno != 0 {
		err = &net.OpError{Op: "write", Net: "tcp", Source: w.c.LocalAddr(), Addr: w.c.RemoteAddr(), Err: errno}
	}
	return n, err
}

// writeBuffers writes bufs with vectored I/O, under a write deadline
// refreshed every stallWriteChunk bytes. scratch is reused between calls.
func (w *stallWriter) writeBuffers(bufs net.Buffers, scratch *net.Buffers) error {
	for len(bufs) > 0 {
		group := (*scratch)[:0]
		n := 0
		for len(bufs) > 0 && n < stallWriteChunk {
			b := bufs[0]
			if k := stallWriteChunk - n; len(b) > k {
				group = append(group, b[:k])
				bufs[0] = b[k:]
				n += k
				break
			}
			group = append(group, b)
			n += len(b)
			bufs = bufs[1:]
		}
		*scratch = group
		w.c.SetWriteDeadline(time.Now().Add(w.stall))
		if _, err := group.WriteTo(w.c); err != nil {
			return err
		}
	}
	return nil
}
