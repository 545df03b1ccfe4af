package tcp

import (
	"errors"
	"io"
	"os"
	"syscall"
	"time"

	"unsafe"

	"golang.org/x/sys/unix"
)

// Reading responses. The responses of a stream are read by whoever holds
// its read role (stream.reading): its reader goroutine, or a thread that
// waits for a transfer on the stream (Drive: the stream is the transfer's
// core.Driver). A thread that reads its own acknowledgement saves two
// wake-ups per small transfer, the reader goroutine's and its own, each
// tens of microseconds on an idle machine.
//
// The reader goroutine waits for data in the netpoller without the role,
// takes it to read, and lets it go whenever it has read every response
// that arrived. A waiting thread takes the role only when it is free and
// waits in poll(2) on the socket, its own thread blocked in the kernel.
// Data that arrives while a thread holds the role also wakes the
// goroutine, which finds the role taken and goes back to waiting; so that
// none is left unread, it marks wantRead first, and the thread reads once
// more when it lets go and finds it marked.
//
// Over TLS the reader goroutine reads alone.

// respReader is the buffered reader of a stream's responses. It reads the
// socket by the way of whoever holds the read role: the goroutine through
// the netpoller, a thread with poll(2).
type respReader struct {
	s      *stream
	buf    []byte
	r, w   int
	thread bool // a waiting thread holds the read role
}

// Buffered returns the number of bytes read from the socket and not yet
// consumed.
func (b *respReader) Buffered() int { return b.w - b.r }

func (b *respReader) Read(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	if b.r == b.w {
		b.r, b.w = 0, 0
		if len(p) >= len(b.buf) { // large: straight into p
			return b.readSocket(p)
		}
		n, err := b.readSocket(b.buf)
		if n <= 0 {
			return 0, err
		}
		b.w = n
	}
	n := copy(p, b.buf[b.r:b.w])
	b.r += n
	return n, nil
}

func (b *respReader) readSocket(p []byte) (int, error) {
	if b.thread {
		return b.s.threadRead(p)
	}
	return b.s.c.Read(p)
}

// fill reads what the socket holds into the empty buffer without waiting:
// unix.EAGAIN when it holds nothing, io.EOF when the peer closed.
func (b *respReader) fill(fd int) error {
	b.r, b.w = 0, 0
	n, errno := rawRead(fd, b.buf)
	switch {
	case errno != 0:
		return errno
	case n == 0:
		return io.EOF
	}
	b.w = n
	return nil
}

// readLoop ends the transfers of the stream's frames as their responses
// arrive, for as long as the stream lives.
func (s *stream) readLoop() {
	for {
		if s.raw != nil {
			if err := s.awaitResponses(); err != nil {
				s.fail(s.connErr("read response", err))
				return
			}
		}
		err := s.serveResponses()
		if s.raw != nil {
			s.reading.Unlock()
		}
		if err != nil {
			if !errors.Is(err, errStreamBroken) {
				s.fail(err)
			}
			return
		}
	}
}

// awaitResponses waits in the netpoller until the socket has data, takes
// the read role and reads what the socket holds into the buffer. It
// returns holding the role, or with an error (not holding it).
func (s *stream) awaitResponses() error {
	var ferr error
	err := s.raw.Read(func(fd uintptr) bool {
		s.wantRead.Store(true)
		if !s.reading.TryLock() {
			return false // a thread reads: it looks at wantRead when it lets go
		}
		s.wantRead.Store(false)
		s.rd.thread = false
		if ferr = s.rd.fill(int(fd)); ferr == unix.EAGAIN {
			s.reading.Unlock()
			return false
		}
		return true
	})
	if err == nil && ferr != nil {
		s.reading.Unlock()
		err = ferr
	}
	return err
}

// errStreamBroken: the stream broke while a response was read (fail has
// ended its transfers).
var errStreamBroken = errors.New("stream broken")

// serveResponses reads responses and ends their frames' transfers until
// the buffer is empty at the end of one. The caller holds the read role.
func (s *stream) serveResponses() error {
	for {
		f, refused, err := s.readResponse(&s.msg)
		if err != nil {
			return err
		}
		if !s.retire(f) {
			return errStreamBroken
		}
		if s.rd.thread {
			s.p.b.byWaiters.Add(1)
		}
		s.meterDone(f, refused == nil)
		if refused != nil {
			f.t.FailErr(refused)
		} else {
			f.t.PartDone()
		}
		putFrame(f)
		if s.rd.Buffered() == 0 {
			return nil
		}
	}
}

// Drive reads and ends the responses that arrive until until, on the
// calling thread (core.Driver). It reports false when the reader goroutine
// or another thread is reading.
func (s *stream) Drive(until time.Time) bool {
	if !s.reading.TryLock() {
		return false
	}
	s.rd.thread = true
	err := s.driveOnce(until)
	s.letGo()
	if err != nil {
		s.fail(err)
	}
	return true
}

// driveOnce reads what has arrived, waiting for something until until,
// and serves the responses in it. The caller holds the read role.
func (s *stream) driveOnce(until time.Time) error {
	err := s.fillNow()
	if err == unix.EAGAIN && s.p.b.cfg.BusyPoll > 0 {
		err = s.pollForResponse(until) // busypoll.go
	}
	if err == unix.EAGAIN {
		if !time.Now().Before(until) {
			return nil
		}
		if err = s.pollIn(until); err != nil {
			return s.connErr("read response", err)
		}
		if err = s.fillNow(); err == unix.EAGAIN {
			return nil // nothing yet
		}
	}
	if err != nil {
		return s.connErr("read response", err)
	}
	if err := s.serveResponses(); err != nil && !errors.Is(err, errStreamBroken) {
		return err
	}
	return nil
}

// letGo gives back the read role a thread held, reading what the reader
// goroutine was woken for meanwhile.
func (s *stream) letGo() {
	s.reading.Unlock()
	for s.wantRead.Load() && s.reading.TryLock() {
		s.wantRead.Store(false)
		s.rd.thread = true
		err := s.driveOnce(time.Time{})
		s.reading.Unlock()
		if err != nil {
			s.fail(err)
			return
		}
	}
}

// fillNow fills the empty buffer with what the socket holds, without
// waiting (respReader.fill).
func (s *stream) fillNow() error {
	var ferr error
	if err := s.raw.Control(func(fd uintptr) { ferr = s.rd.fill(int(fd)) }); err != nil {
		return err
	}
	return ferr
}

// threadRead is the read of a thread that holds the read role: what the
// socket holds, or, when it holds nothing, a wait in poll(2) until data
// arrives or the stream's stall deadline passes.
func (s *stream) threadRead(p []byte) (int, error) {
	for {
		var n int
		var rerr error
		err := s.raw.Control(func(fd uintptr) {
			var errno syscall.Errno
			if n, errno = rawRead(int(fd), p); errno != 0 {
				rerr = errno
			}
		})
		switch {
		case err != nil:
			return 0, err
		case rerr == nil && n == 0:
			return 0, io.EOF
		case rerr == nil:
			return n, nil
		case rerr != unix.EAGAIN:
			return 0, rerr
		}
		until := time.Now().Add(time.Hour)
		if at := s.stallAt.Load(); at != 0 {
			until = time.Unix(0, at)
			if !time.Now().Before(until) {
				return 0, os.ErrDeadlineExceeded
			}
		}
		if err := s.pollIn(until); err != nil {
			return 0, err
		}
	}
}

// pollIn waits in poll(2) until the socket has data (or is shut down) or
// until passes.
func (s *stream) pollIn(until time.Time) error {
	d := time.Until(until)
	if d <= 0 {
		return nil
	}
	ts := unix.NsecToTimespec(int64(d))
	var perr error
	err := s.raw.Control(func(fd uintptr) {
		s.pfd[0] = unix.PollFd{Fd: int32(fd), Events: unix.POLLIN}
		// A raw system call: the thread keeps its processor (P) while it
		// waits. With an ordinary one the scheduler hands the P away after
		// 20 µs, and the thread, woken by the response, waits for another
		// thread to hand one back before it can read it: a wake-up more.
		// core.BlockThread bounds such threads to GOMAXPROCS-1, so a P is
		// always left for the rest of the process.
		_, _, e := unix.RawSyscall6(unix.SYS_PPOLL, uintptr(unsafe.Pointer(&s.pfd[0])), 1, uintptr(unsafe.Pointer(&ts)), 0, 0, 0)
		if e != 0 {
			perr = e
		}
	})
	if err != nil {
		return err
	}
	if perr == unix.EINTR {
		return nil
	}
	return perr
}

// setStall arms the stream's stall deadline (zero: none) for the reader
// goroutine's reads and for a driving thread's.
func (s *stream) setStall(at time.Time) {
	s.c.SetReadDeadline(at)
	if at.IsZero() {
		s.stallAt.Store(0)
	} else {
		s.stallAt.Store(at.UnixNano())
	}
}
