package tcp

import (
	"bufio"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/mori-go/mori-go/core"
	"github.com/mori-go/mori-go/internal/lattrace"
)

// frame is one request on its way to a peer, with what its response needs.
type frame struct {
	t       *core.Transfer
	ranges  []core.Range
	payload uint64 // bytes of data this frame moves
	parts   uint32
	buf     []byte // header, entries and small payloads
	// Set by encode: the payload is GPU memory, staged through page-locked
	// buffers while the frame is written (sendStaged); iov is where the
	// frame's place is among the iovecs of its batch.
	staged bool
	iov    int
}

var framePool = sync.Pool{New: func() any { return new(frame) }}

func getFrame(t *core.Transfer) *frame {
	f := framePool.Get().(*frame)
	f.t = t
	return f
}

func putFrame(f *frame) {
	f.t = nil
	f.ranges = f.ranges[:0]
	f.payload = 0
	f.staged = false
	if cap(f.buf) > 4<<20 {
		f.buf = nil
	}
	framePool.Put(f)
}

// peer is the set of streams to one remote engine.
type peer struct {
	b    *Backend
	key  string
	addr string
	next atomic.Uint32

	mu      sync.Mutex
	streams []*stream
	closed  error
}

func newPeer(b *Backend, key, addr string) *peer {
	return &peer{b: b, key: key, addr: addr, streams: make([]*stream, b.cfg.Streams)}
}

// connectAll dials every stream in parallel.
func (p *peer) connectAll() error {
	errs := make([]error, len(p.streams))
	var wg sync.WaitGroup
	for i := range p.streams {
		wg.Add(1)
		go func() {
			defer wg.Done()
			s, err := p.dial()
			errs[i] = err
			p.mu.Lock()
			p.streams[i] = s
			p.mu.Unlock()
		}()
	}
	wg.Wait()
	return errors.Join(errs...)
}

func (p *peer) dial() (*stream, error) {
	cfg := &p.b.cfg
	c, err := net.DialTimeout("tcp", p.addr, cfg.DialTimeout)
	if err != nil {
		return nil, core.Errorf(core.ErrConnection, "connect to engine %q at %s: %w", p.key, p.addr, err)
	}
	if tc, ok := c.(*net.TCPConn); ok {
		tc.SetNoDelay(true)
	}
	if p.b.env.TLS != nil {
		c = tls.Client(c, p.b.env.TLS.Client) // handshakes on the first read
	}
	c.SetDeadline(time.Now().Add(cfg.DialTimeout))
	ch, err := readChallenge(c)
	if err == nil && ch.Key != p.key {
		err = core.Errorf(core.ErrNotFound, "%s is engine %q, not %q", p.addr, ch.Key, p.key)
	}
	if err == nil {
		h := hello{From: p.b.env.LocalKey, To: p.key, MAC: helloMAC(p.b.env.Secret, ch.Nonce, p.b.env.LocalKey, p.key)}
		_, err = c.Write(h.encode())
	}
	if err == nil {
		err = readVerdict(c)
	}
	if err != nil {
		c.Close()
		if core.CodeOf(err) == core.ErrInternal {
			err = core.Errorf(core.ErrConnection, "handshake with engine %q at %s: %w", p.key, p.addr, err)
		}
		return nil, err
	}
	c.SetDeadline(time.Time{})
	s := &stream{p: p, c: c, br: bufio.NewReaderSize(c, 64<<10)}
	s.cond = sync.NewCond(&s.mu)
	go s.writeLoop()
	go s.readLoop()
	return s, nil
}

// pick returns a healthy stream, redialing broken ones. It returns nil and
// an error when the peer cannot be reached.
func (p *peer) pick(i int) (*stream, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed != nil {
		return nil, p.closed
	}
	n := len(p.streams)
	for k := 0; k < n; k++ {
		s := p.streams[(i+k)%n]
		if s != nil && s.healthy() {
			return s, nil
		}
	}
	// Every stream is down: fail at once and redial in the background.
	// Dialing here would hold Submit (and, through p.mu, every submitter
	// to this peer) for up to the dial timeout per request when the peer
	// is a black hole.
	p.redialLocked()
	return nil, core.Errorf(core.ErrConnection, "no connection to engine %q at %s: its %d streams are down (reconnecting in the background)", p.key, p.addr, n)
}

// redial replaces broken streams in the background.
func (p *peer) redialBroken() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.redialLocked()
}

// redialLocked is redialBroken with p.mu held.
func (p *peer) redialLocked() {
	if p.closed != nil {
		return
	}
	for i, s := range p.streams {
		if s != nil && !s.healthy() && !s.redialing {
			s.redialing = true
			go func() {
				ns, err := p.dial()
				p.mu.Lock()
				defer p.mu.Unlock()
				if err != nil {
					p.b.env.Logger.Debug("tcp backend: redial failed", "peer", p.key, "err", err)
					s.redialing = false
					return
				}
				if p.closed != nil {
					ns.fail(p.closed)
					return
				}
				p.streams[i] = ns
			}()
		}
	}
}

func (p *peer) close(err error) {
	p.mu.Lock()
	if p.closed == nil {
		p.closed = err
	}
	streams := p.streams
	p.mu.Unlock()
	for _, s := range streams {
		if s != nil {
			s.fail(err)
		}
	}
}

// submit cuts t into frames and spreads them over the streams.
func (p *peer) submit(t *core.Transfer) {
	cfg := &p.b.cfg
	chunk := uint64(cfg.ChunkSize)
	var frames []*frame
	var cur *frame
	for _, r := range t.Ranges {
		for off := uint64(0); off < r.Size; {
			if cur == nil {
				cur = getFrame(t)
			}
			n := min(r.Size-off, chunk-cur.payload)
			cur.ranges = append(cur.ranges, core.Range{LocalOffset: r.LocalOffset + off, RemoteOffset: r.RemoteOffset + off, Size: n})
			cur.payload += n
			off += n
			if cur.payload >= chunk || len(cur.ranges) >= cfg.MaxEntries {
				frames = append(frames, cur)
				cur = nil
			}
		}
	}
	if cur != nil {
		frames = append(frames, cur)
	}
	for _, f := range frames {
		f.parts = uint32(len(frames))
	}
	t.Begin(len(frames))
	start := int(p.next.Add(1))
	for i, f := range frames {
		s, err := p.pick(start + i)
		if err != nil {
			t.FailErr(err)
			for _, f := range frames[i:] {
				putFrame(f)
			}
			return
		}
		if err := s.enqueue(f); err != nil {
			// The stream broke between pick and enqueue: fail; the caller
			// may retry the transfer on the redialed stream.
			t.FailErr(err)
			putFrame(f)
			p.redialBroken()
		}
	}
}

// stream is one TCP connection to a peer, with a writer goroutine that
// sends queued frames and a reader goroutine that matches responses to
// frames in order.
type stream struct {
	p  *peer
	c  net.Conn
	br *bufio.Reader

	// Scratch of the GPU staging path, used by whoever writes.
	spans []core.DeviceSpan
	iov   net.Buffers

	// Scratch of whoever writes (s.writing), reused batch after batch.
	batch  []*frame
	ready  []*frame
	used   []*core.Region
	bufs   net.Buffers
	inline [1]*frame

	mu            sync.Mutex
	cond          *sync.Cond
	queue         []*frame
	inflight      []*frame
	inflightBytes int
	writing       bool // a goroutine is encoding and writing frames
	broken        error
	redialing     bool // guarded by p.mu
}

func (s *stream) healthy() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.broken == nil
}

// enqueue hands a frame to the stream. A small frame of host memory on an
// idle stream is written at once by the caller, which saves waking the
// writer goroutine (the larger part of a small transfer's latency);
// anything else is queued for the writer.
func (s *stream) enqueue(f *frame) error {
	s.mu.Lock()
	if s.broken != nil {
		s.mu.Unlock()
		return s.broken
	}
	cfg := &s.p.b.cfg
	if !s.writing && len(s.queue) == 0 && f.t.Local.Host && cfg.InlineBelow > 0 && f.payload <= uint64(cfg.InlineBelow) &&
		s.inflightBytes < cfg.Window {
		s.writing = true
		s.inline[0] = f
		s.mu.Unlock()
		if err := s.writeBatch(s.inline[:]); err != nil {
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
	inflight, queued := s.inflight, s.queue
	s.inflight, s.queue = nil, nil
	s.cond.Broadcast()
	s.mu.Unlock()
	if tc, ok := s.c.(*net.TCPConn); ok && len(inflight) > 0 {
		// Reset, not close: a graceful close would still deliver the bytes
		// of the frames in flight (the kernel keeps sending them after
		// Close), and a write reported failed here would land later,
		// possibly over a newer write to the same memory.
		tc.SetLinger(0)
	}
	s.c.Close()
	// Frames in flight are not recycled: the reader may be matching a
	// response to the first one, and the writer may still be sending them.
	for _, f := range inflight {
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
		for s.broken == nil && (len(s.queue) == 0 || s.inflightBytes >= cfg.Window || s.writing) {
			s.cond.Wait()
		}
		if s.broken != nil {
			s.mu.Unlock()
			return
		}
		s.writing = true
		batch := s.batch[:0]
		bytes := s.inflightBytes
		for len(s.queue) > 0 && bytes < cfg.Window {
			f := s.queue[0]
			s.queue[0] = nil
			s.queue = s.queue[1:]
			batch = append(batch, f)
			bytes += int(f.payload)
		}
		s.batch = batch
		s.mu.Unlock()
		if err := s.writeBatch(batch); err != nil {
			s.fail(err)
			return
		}
	}
}

// writeBatch encodes and writes frames. The caller has set s.writing, which
// makes it the stream's only writer; writeBatch clears it. It returns an
// error when the stream is broken.
func (s *stream) writeBatch(batch []*frame) error {
	cfg := &s.p.b.cfg
	bufs, ready, used := s.bufs[:0], s.ready[:0], s.used[:0]
	defer func() {
		// Drop the references to frames (back in the pool, or waiting for
		// their response) and their buffers until the next batch.
		clear(batch)
		clear(ready)
		clear(used)
		clear(bufs)
		s.bufs, s.ready, s.used = bufs[:0], ready[:0], used[:0]
		s.mu.Lock()
		s.writing = false
		if len(s.queue) > 0 {
			s.cond.Broadcast() // frames queued meanwhile: wake the writer
		}
		s.mu.Unlock()
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
		s.c.SetReadDeadline(time.Now().Add(cfg.StallTimeout))
	}
	for _, f := range ready {
		s.inflight = append(s.inflight, f)
		s.inflightBytes += int(f.payload)
	}
	s.mu.Unlock()
	err := s.send(ready, bufs)
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
			if _, err := part.WriteTo(s.c); err != nil {
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
		if _, err := part.WriteTo(s.c); err != nil {
			return s.connErr("write", err)
		}
	}
	return nil
}

// sendStaged writes frames whose payload is GPU memory of device: the
// payloads of all frames, as one gather list, are copied to page-locked
// buffers chunk by chunk, and each chunk is written, behind the headers of
// the frames that start in it, while the next chunks are being copied.
//
// A failed device copy leaves a frame half written: the stream is broken
// (its frames fail with the GPU error) and redialed on next use.
func (s *stream) sendStaged(frames []*frame, device int) error {
	spans := s.spans[:0]
	for _, f := range frames {
		for _, r := range f.ranges {
			spans = append(spans, core.DeviceSpan{Addr: f.t.Local.Addr + uintptr(r.LocalOffset), Size: r.Size})
		}
	}
	s.spans = spans
	next, left := 0, uint64(0) // frame whose payload comes next, and its bytes still to write
	var netErr error
	err := s.p.b.env.GPU.ReadStaged(device, spans, func(chunk []byte) error {
		iov := s.iov[:0]
		for len(chunk) > 0 {
			if left == 0 {
				iov = append(iov, frames[next].buf)
				left = frames[next].payload
			}
			n := min(left, uint64(len(chunk)))
			iov = append(iov, chunk[:n])
			chunk = chunk[n:]
			if left -= n; left == 0 {
				next++
			}
		}
		s.iov = iov[:0]
		if _, err := iov.WriteTo(s.c); err != nil {
			netErr = s.connErr("write", err)
			return netErr
		}
		return nil
	})
	switch {
	case netErr != nil:
		return netErr
	case err != nil:
		return core.Errorf(core.ErrGPUOp, "copy GPU %d memory to the network: %w", device, err)
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

func (s *stream) readLoop() {
	var hb [respHeaderLen]byte
	msg := make([]byte, 0, 256)
	for {
		if _, err := io.ReadFull(s.br, hb[:]); err != nil {
			s.fail(s.connErr("read response", err))
			return
		}
		lattrace.Mark(lattrace.InitWake)
		h, err := parseRespHeader(hb[:])
		if err != nil {
			s.fail(core.Errorf(core.ErrConnection, "engine %q at %s sent a bad response: %w", s.p.key, s.p.addr, err))
			return
		}
		if cap(msg) < int(h.MsgLen) {
			msg = make([]byte, h.MsgLen) // up to maxMessageLen
		}
		msg = msg[:h.MsgLen]
		if _, err := io.ReadFull(s.br, msg); err != nil {
			s.fail(s.connErr("read response", err))
			return
		}
		s.mu.Lock()
		if len(s.inflight) == 0 {
			s.mu.Unlock()
			s.fail(core.Errorf(core.ErrConnection, "engine %q at %s sent a response to no request", s.p.key, s.p.addr))
			return
		}
		f := s.inflight[0]
		s.mu.Unlock()
		want := respAck
		if f.t.Op == core.OpRead {
			want = respData
		}
		if h.Type != want || (h.Code == core.StatusSuccess && h.Type == respData && h.Payload != f.payload) ||
			(h.Code != core.StatusSuccess && h.Payload != 0) ||
			(h.Type == respAck && h.Payload != 0) {
			s.fail(core.Errorf(core.ErrConnection, "engine %q at %s sent a response out of step (type %#x, %d bytes)", s.p.key, s.p.addr, h.Type, h.Payload))
			return
		}
		var ferr error
		if h.Code != core.StatusSuccess {
			ferr = core.Errorf(ErrRefusedCode(h.Code), "engine %q refused: %s", s.p.key, msg)
		} else if h.Type == respData {
			if err := s.readData(f); err != nil {
				s.fail(err)
				return
			}
		}
		s.mu.Lock()
		if s.broken != nil {
			// fail() took the frames meanwhile and ended their transfers.
			s.mu.Unlock()
			return
		}
		s.inflight[0] = nil
		s.inflight = s.inflight[1:]
		s.inflightBytes -= int(f.payload)
		if len(s.inflight) == 0 {
			s.c.SetReadDeadline(time.Time{})
		} else {
			s.c.SetReadDeadline(time.Now().Add(s.p.b.cfg.StallTimeout))
		}
		if len(s.queue) > 0 && !s.writing {
			s.cond.Signal() // the writer may be waiting for room in the window
		}
		s.mu.Unlock()
		if ferr != nil {
			f.t.FailErr(ferr)
		} else {
			f.t.PartDone()
		}
		putFrame(f)
	}
}

// readData reads a read response's payload into the local region.
func (s *stream) readData(f *frame) error {
	t := f.t
	if err := t.Local.Use(); err != nil {
		// The local memory is gone: drain the payload to stay in step.
		t.FailErr(err)
		if _, err := io.CopyN(io.Discard, s.br, int64(f.payload)); err != nil {
			return s.connErr("read data", err)
		}
		return nil
	}
	defer t.Local.Release()
	if !t.Local.Host {
		return s.readStaged(f)
	}
	for i, r := range f.ranges {
		for off := uint64(0); off < r.Size; {
			if t.Done() {
				// Failed or timed out meanwhile: the memory is the
				// application's again. Drain the rest to stay in step.
				rest := r.Size - off
				for _, q := range f.ranges[i+1:] {
					rest += q.Size
				}
				if _, err := io.CopyN(io.Discard, s.br, int64(rest)); err != nil {
					return s.connErr("read data", err)
				}
				return nil
			}
			n := min(r.Size-off, landPiece)
			if _, err := io.ReadFull(s.br, t.Local.Bytes(r.LocalOffset+off, n)); err != nil {
				return s.connErr("read data", err)
			}
			off += n
		}
	}
	return nil
}

// landPiece is the most bytes of a read response written into local memory
// between two checks that its transfer is still running.
const landPiece = 256 << 10

// readStaged reads a read response's payload into GPU memory: the socket
// fills a page-locked chunk while the previous ones are copied to the
// device. A failed device copy fails the transfer; the rest of the payload
// is drained so that the stream stays in step.
func (s *stream) readStaged(f *frame) error {
	t := f.t
	spans := make([]core.DeviceSpan, len(f.ranges))
	for i, r := range f.ranges {
		spans[i] = core.DeviceSpan{Addr: t.Local.Addr + uintptr(r.LocalOffset), Size: r.Size}
	}
	var got uint64
	var netErr error
	err := s.p.b.env.GPU.WriteStaged(t.Local.Device, spans, func(b []byte) error {
		if _, err := io.ReadFull(s.br, b); err != nil {
			netErr = s.connErr("read data", err)
			return netErr
		}
		got += uint64(len(b))
		return nil
	})
	if netErr != nil {
		return netErr
	}
	if err != nil {
		t.Fail(core.ErrGPUOp, "copy to GPU %d memory %d: %v", t.Local.Device, t.Local.ID, err)
		if _, err := io.CopyN(io.Discard, s.br, int64(f.payload-got)); err != nil {
			return s.connErr("read data", err)
		}
	}
	return nil
}
