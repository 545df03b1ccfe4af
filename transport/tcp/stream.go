package tcp

import (
	"errors"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/mori-go/mori-go/core"
	"github.com/mori-go/mori-go/internal/lattrace"
	"github.com/mori-go/mori-go/transport/compress"
)

// stream is one TCP connection to a peer, with a writer goroutine that
// sends queued frames and a reader goroutine that matches responses to
// frames in order.
type stream struct {
	p   *peer
	c   net.Conn
	raw syscall.RawConn // the socket, for inline writes and driving threads; nil over TLS (inline.go)

	// Responses (drive.go): the buffered reader and scratch of whoever
	// holds the read role, the role, and the reader goroutine's mark that
	// it found the role taken with data waiting.
	rd       respReader
	msg      []byte
	pfd      [1]unix.PollFd
	reading  sync.Mutex
	wantRead atomic.Bool
	stallAt  atomic.Int64 // the stall deadline in Unix ns, 0 while none
	drv      core.Driver  // the stream, for core.Status.SetDriver; nil over TLS

	// Scratch of the GPU staging path, used by whoever writes.
	spans []core.DeviceSpan
	iov   net.Buffers

	// compress: the target offered compression. srcs and cframes are
	// scratch of whoever writes: a frame's ranges, the compressed payloads
	// of the batch being written.
	compress bool
	srcs     [][]byte
	cframes  []*compress.Frame

	// Scratch of whoever writes (s.writing), reused batch after batch.
	batch  []*frame
	ready  []*frame
	used   []*core.Region
	bufs   net.Buffers
	inline [1]*frame
	iovecs []unix.Iovec

	mu            sync.Mutex
	cond          *sync.Cond
	queue         []*frame
	inflight      []*frame
	inflightBytes int
	writing       bool     // a goroutine is encoding and writing frames
	handoff       *handoff // the rest of an inline write, for the writer goroutine
	broken        error
	redialing     bool // guarded by p.mu
}

func (s *stream) healthy() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.broken == nil
}

// enqueue hands a frame to the stream. A small frame of host memory on an
// idle stream is written at once by the caller, as far as the socket
// takes it without waiting (inline.go), which saves waking the writer
// goroutine (the larger part of a small transfer's latency); anything else
// is queued for the writer.
func (s *stream) enqueue(f *frame) error {
	s.mu.Lock()
	if s.broken != nil {
		s.mu.Unlock()
		return s.broken
	}
	cfg := &s.p.b.cfg
	if s.idleForInlineLocked() && len(s.queue) == 0 && f.t.Local.Host &&
		cfg.InlineBelow > 0 && f.payload <= uint64(cfg.InlineBelow) {
		s.writing = true
		s.inline[0] = f
		s.mu.Unlock()
		if err := s.writeBatch(s.inline[:], true); err != nil {
			s.fail(err) // fails f too: it is in flight or already failed
		}
		return nil
	}
	s.queue = append(s.queue, f)
	s.cond.Signal()
	s.mu.Unlock()
	return nil
}

// fail breaks the stream: the connection is closed and every frame queued
// or in flight fails with err.
func (s *stream) fail(err error) {
	s.mu.Lock()
	if s.broken != nil {
		s.mu.Unlock()
		return
	}
	s.broken = err
	inflight, queued, rest := s.inflight, s.queue, s.handoff
	s.inflight, s.queue, s.handoff = nil, nil, nil
	s.cond.Broadcast()
	s.mu.Unlock()
	if rest != nil {
		rest.release()
	}
	if tc, ok := s.c.(*net.TCPConn); ok && len(inflight) > 0 {
		// Reset, not close: a graceful close would still deliver the bytes
		// of the frames in flight (the kernel keeps sending them after
		// Close), and a write reported failed here would land later,
		// possibly over a newer write to the same memory.
		tc.SetLinger(0)
	}
	if s.raw != nil {
		// Wake a thread waiting in poll(2) on the socket (drive.go): it
		// holds the descriptor, so Close would wait for it.
		s.raw.Control(func(fd uintptr) { unix.Shutdown(int(fd), unix.SHUT_RD) })
	}
	s.c.Close()
	// Frames in flight are not recycled: the reader may be matching a
	// response to the first one, and the writer may still be sending them.
	for _, f := range inflight {
		s.meterDone(f, false)
		f.t.FailErr(err)
	}
	for _, f := range queued {
		f.t.FailErr(err)
		putFrame(f)
	}
	// Replace the stream now, rather than when every other stream of the
	// peer has broken too: one reset stream must not leave the peer on
	// fewer streams for good. (A closed peer is not redialed.)
	go s.p.redialBroken()
}

func (s *stream) connErr(what string, err error) error {
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return core.Errorf(core.ErrTimeout, "engine %q at %s stalled: no response for %s", s.p.key, s.p.addr, s.p.b.cfg.StallTimeout)
	}
	if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
		return core.Errorf(core.ErrConnection, "connection to engine %q at %s lost: %s: peer closed the connection", s.p.key, s.p.addr, what)
	}
	return core.Errorf(core.ErrConnection, "connection to engine %q at %s lost: %s: %w", s.p.key, s.p.addr, what, err)
}

func (s *stream) writeLoop() {
	cfg := &s.p.b.cfg
	for {
		s.mu.Lock()
		for s.broken == nil && s.handoff == nil && (len(s.queue) == 0 || s.inflightBytes >= cfg.Window || s.writing) {
			s.cond.Wait()
		}
		if s.broken != nil {
			s.mu.Unlock()
			return
		}
		s.writing = true
		if h := s.handoff; h != nil { // the rest of an inline write goes first
			s.handoff = nil
			s.mu.Unlock()
			err := s.sendHandoff(h)
			s.mu.Lock()
			s.writing = false
			s.mu.Unlock()
			if err != nil {
				s.fail(err)
				return
			}
			continue
		}
		batch := s.takeLocked(false)
		s.mu.Unlock()
		if err := s.writeBatch(batch, false); err != nil {
			s.fail(err)
			return
		}
	}
}

// idleForInlineLocked reports whether the caller may write on the stream
// itself (an inline write, inline.go): the socket is at hand, nobody is
// writing, no inline write's rest is waiting, and the window has room.
// s.mu is held.
func (s *stream) idleForInlineLocked() bool {
	return s.raw != nil && !s.writing && s.handoff == nil && s.inflightBytes < s.p.b.cfg.Window
}

// takeLocked moves frames from the head of the queue into s.batch, up to
// the window, and returns them; hostOnly stops at the first frame of GPU
// memory (an inline write sends host memory only). s.mu is held.
func (s *stream) takeLocked(hostOnly bool) []*frame {
	batch := s.batch[:0]
	bytes := s.inflightBytes
	for len(s.queue) > 0 && bytes < s.p.b.cfg.Window && (!hostOnly || s.queue[0].t.Local.Host) {
		f := s.queue[0]
		s.queue[0] = nil
		s.queue = s.queue[1:]
		batch = append(batch, f)
		bytes += int(f.payload)
	}
	s.batch = batch
	return batch
}

// writeBatch encodes and writes frames. The caller has set s.writing, which
// makes it the stream's only writer; writeBatch clears it. It returns an
// error when the stream is broken. An inline batch (frames of host memory)
// is written without waiting for the socket; what it does not take is
// handed to the writer goroutine.
func (s *stream) writeBatch(batch []*frame, inline bool) error {
	cfg := &s.p.b.cfg
	bufs, ready, used := s.bufs[:0], s.ready[:0], s.used[:0]
	var rest *handoff
	defer func() {
		// Drop the references to frames (back in the pool, or waiting for
		// their response) and their buffers until the next batch.
		clear(batch)
		clear(ready)
		clear(used)
		clear(bufs)
		s.bufs, s.ready, s.used = bufs[:0], ready[:0], used[:0]
		s.releaseCompressed()
		s.mu.Lock()
		s.writing = false
		if rest != nil && s.broken == nil {
			s.handoff, rest = rest, nil
		}
		if len(s.queue) > 0 || s.handoff != nil {
			s.cond.Broadcast() // frames queued meanwhile, or a handoff: wake the writer
		}
		s.mu.Unlock()
		if rest != nil { // broken meanwhile: nobody will write it
			rest.release()
		}
	}()
	for _, f := range batch {
		if f.t.Done() {
			// Failed or timed out while queued: nothing to send.
			putFrame(f)
			continue
		}
		var err error
		f.iov = len(bufs)
		if bufs, err = s.encode(f, bufs); err != nil {
			f.t.FailErr(err)
			putFrame(f)
			continue
		}
		ready = append(ready, f)
		used = append(used, f.t.Local)
	}
	if len(ready) == 0 {
		return nil
	}
	s.mu.Lock()
	if s.broken != nil {
		err := s.broken
		s.mu.Unlock()
		for i, f := range ready {
			used[i].Release()
			f.t.FailErr(err)
			putFrame(f)
		}
		return err
	}
	if len(s.inflight) == 0 {
		s.setStall(time.Now().Add(cfg.StallTimeout))
	}
	for _, f := range ready {
		s.inflight = append(s.inflight, f)
		s.inflightBytes += int(f.payload)
	}
	s.mu.Unlock()
	s.meterStart(ready)
	var err error
	if inline {
		var left net.Buffers
		if left, err = s.writeNow(bufs); err == nil && len(left) > 0 {
			rest = s.newHandoff(left, used)
			return nil
		}
	} else {
		err = s.send(ready, bufs)
	}
	lattrace.Mark(lattrace.FrameOut)
	for _, r := range used {
		r.Release()
	}
	return err
}

// send writes a batch of encoded frames: the iovecs of frames in host
// memory with vectored I/O, and runs of frames in GPU memory through
// sendStaged, in order.
func (s *stream) send(ready []*frame, bufs net.Buffers) error {
	done := 0 // iovecs of bufs written
	for i := 0; i < len(ready); {
		if !ready[i].staged {
			i++
			continue
		}
		if end := ready[i].iov; end > done {
			part := bufs[done:end]
			if err := s.writeAll(part); err != nil {
				return s.connErr("write", err)
			}
			done = end
		}
		// A run of staged frames of one device goes through one pipeline.
		j, dev := i+1, ready[i].t.Local.Device
		for j < len(ready) && ready[j].staged && ready[j].t.Local.Device == dev {
			j++
		}
		if err := s.sendStaged(ready[i:j], dev); err != nil {
			return err
		}
		i = j
	}
	if done < len(bufs) {
		part := bufs[done:]
		if err := s.writeAll(part); err != nil {
			return s.connErr("write", err)
		}
	}
	return nil
}

// encode appends the iovecs of f to bufs. It holds a Use of the local
// region, released by the caller once the write is done.
func (s *stream) encode(f *frame, bufs net.Buffers) (net.Buffers, error) {
	t := f.t
	cfg := &s.p.b.cfg
	if err := t.Local.Use(); err != nil {
		return bufs, err
	}
	typ := reqWrite
	payload := f.payload
	if t.Op == core.OpRead {
		typ = reqRead
		payload = 0
	}
	need := reqHeaderLen + entryLen*len(f.ranges)
	small := 0
	if typ == reqWrite && t.Local.Host {
		for _, r := range f.ranges {
			if r.Size <= uint64(cfg.CopyBelow) {
				small += int(r.Size)
			}
		}
	}
	if cap(f.buf) < need+small {
		f.buf = make([]byte, need, need+small)
	}
	b := f.buf[:need]
	h := reqHeader{Type: typ, MemID: t.Remote.ID, Token: t.Remote.Token, UID: t.UID, Instance: t.Instance, Parts: f.parts, Entries: uint32(len(f.ranges)), Payload: payload}
	h.put(b)
	for i, r := range f.ranges {
		putEntry(b[reqHeaderLen+i*entryLen:], r.RemoteOffset, r.Size)
	}
	if typ == reqRead {
		return append(bufs, b), nil
	}
	if s.compresses(f) {
		return s.encodeCompressed(f, bufs)
	}
	f.wire = need + int(f.payload)
	if !t.Local.Host {
		// The payload is staged while the frame is written (send).
		f.buf = b
		f.staged = true
		return bufs, nil
	}
	mark := 0
	for _, r := range f.ranges {
		switch {
		case r.Size <= uint64(cfg.CopyBelow):
			b = append(b, t.Local.Bytes(r.LocalOffset, r.Size)...)
		default:
			bufs = append(bufs, b[mark:])
			mark = len(b)
			bufs = append(bufs, t.Local.Bytes(r.LocalOffset, r.Size))
		}
	}
	if mark < len(b) {
		bufs = append(bufs, b[mark:])
	}
	f.buf = b
	return bufs, nil
}
