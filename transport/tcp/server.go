package tcp

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"

	"github.com/mori-go/mori-go/core"
	"github.com/mori-go/mori-go/internal/lattrace"
)

// server accepts peers' streams and serves their frames into local memory.
type server struct {
	cfg     *Config
	env     core.BackendEnv
	ln      net.Listener
	log     *slog.Logger
	comp    *compression // nil: compressed writes are refused
	wg      sync.WaitGroup
	mu      sync.Mutex
	conns   map[net.Conn]struct{}
	live    map[string]int // authenticated streams per initiator key
	pending map[string]int // connections in the handshake, per remote IP
	closed  bool
	// beforeLand, set by tests, runs when a write's payload is about to
	// land: a serving goroutine held there is one the scheduler left
	// behind. Atomic, so that a test may set it while streams are served.
	beforeLand atomic.Pointer[func()]
}

func newServer(cfg *Config, env core.BackendEnv, comp *compression) (*server, error) {
	host := env.Host
	ln, err := net.Listen("tcp", net.JoinHostPort(host, fmt.Sprint(cfg.Port)))
	if err != nil {
		return nil, core.Errorf(core.ErrConnection, "tcp backend: listen on %s:%d: %w", host, cfg.Port, err)
	}
	s := &server{cfg: cfg, env: env, ln: ln, log: env.Logger, comp: comp, conns: make(map[net.Conn]struct{}), live: make(map[string]int), pending: make(map[string]int)}
	s.wg.Add(1)
	go s.accept()
	return s, nil
}

func (s *server) port() uint16 { return uint16(s.ln.Addr().(*net.TCPAddr).Port) }

func (s *server) accept() {
	defer s.wg.Done()
	for {
		c, err := s.ln.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			s.log.Warn("tcp backend: accept", "err", err)
			time.Sleep(10 * time.Millisecond)
			continue
		}
		host := remoteHost(c)
		s.mu.Lock()
		if s.closed || len(s.conns) >= s.cfg.MaxConns || s.pending[host] >= s.cfg.MaxPendingPerHost {
			n, p := len(s.conns), s.pending[host]
			s.mu.Unlock()
			s.log.Warn("tcp backend: refusing connection", "remote", c.RemoteAddr(), "conns", n, "pending_from_host", p)
			if s.env.Admission != nil {
				s.env.Admission.CountRefusal()
			}
			c.Close()
			continue
		}
		s.conns[c] = struct{}{}
		s.pending[host]++
		s.mu.Unlock()
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			err := s.serve(c)
			if !errors.Is(err, io.EOF) && !errors.Is(err, net.ErrClosed) {
				s.log.Warn("tcp backend: closed a peer stream", "remote", c.RemoteAddr().String(), "err", err)
			}
			c.Close()
			s.mu.Lock()
			delete(s.conns, c)
			s.mu.Unlock()
		}()
	}
}

func (s *server) close() {
	s.mu.Lock()
	s.closed = true
	s.ln.Close()
	for c := range s.conns {
		c.Close()
	}
	s.mu.Unlock()
	s.wg.Wait()
}

// connState is the per-stream scratch of the serving loop, reused frame
// after frame.
type connState struct {
	peer    string
	c       net.Conn
	sr      *stallReader
	sw      *stallWriter
	br      *bufio.Reader
	bw      *bufio.Writer
	hdr     [reqHeaderLen]byte
	entries []byte
	ranges  []core.Range
	bufs    net.Buffers
	group   net.Buffers
	spans   []core.DeviceSpan
	iov     []unix.Iovec
	cbuf    []byte   // a compressed payload
	dsts    [][]byte // where it decodes to
}

func (s *server) serve(c net.Conn) error {
	if tc, ok := c.(*net.TCPConn); ok {
		tc.SetNoDelay(true)
		if err := setCongestion(tc, s.cfg.Congestion); err != nil {
			return err // checked by New: the kernel changed since
		}
	}
	plain := c // the TCP connection under TLS, if any
	c, err := s.secure(c)
	if err != nil {
		s.handshakeOver(remoteHost(c))
		return err
	}
	sr := &stallReader{c: c, in: newGoneReader(plain, c), stall: s.cfg.StallTimeout}
	sw := &stallWriter{c: c, raw: sr.in.plainRaw(), stall: s.cfg.StallTimeout}
	st := &connState{c: c, sr: sr, sw: sw, iov: make([]unix.Iovec, 0, maxIovecs), br: bufio.NewReaderSize(sr, s.cfg.ReadBuffer), bw: bufio.NewWriterSize(sw, 16<<10)}
	peer, err := s.handshake(c, st.br)
	s.handshakeOver(remoteHost(c))
	if err != nil {
		return err
	}
	st.peer = peer
	defer s.leave(peer)
	s.log.Debug("tcp backend: peer stream up", "peer", peer, "remote", c.RemoteAddr().String())
	for {
		sr.arm(false)
		if _, err := st.br.Peek(1); err != nil {
			return err
		}
		lattrace.Mark(lattrace.TargetWake)
		sr.arm(true)
		if err := s.serveFrame(st); err != nil {
			return fmt.Errorf("stream from %q: %w", peer, err)
		}
		if st.br.Buffered() == 0 {
			if err := st.bw.Flush(); err != nil {
				return err
			}
			lattrace.Mark(lattrace.AckOut)
		}
	}
}

// serveFrame reads one request and answers it. A returned error closes the
// stream: the peer broke the protocol or the connection failed. A request
// that is well formed but wrong is answered with an error instead.
func (s *server) serveFrame(st *connState) error {
	rq, err := s.readRequest(st)
	if err != nil {
		return err
	}
	region, refused := s.admit(st, &rq)
	if refused != nil {
		return s.refuse(st, &rq, refused)
	}
	lattrace.Mark(lattrace.TargetCheck)
	if rq.h.Type == reqWrite {
		return s.serveWrite(st, &rq, region)
	}
	return s.serveRead(st, &rq, region)
}

// inFrame is the request being served: its header, its key in the inbound
// table, and the total size of its ranges (in connState.ranges).
type inFrame struct {
	h     reqHeader
	key   core.InboundKey
	total uint64
}

// readRequest reads and parses a request's header and entries; the payload
// of a write is left in the stream.
func (s *server) readRequest(st *connState) (inFrame, error) {
	var rq inFrame
	if _, err := io.ReadFull(st.br, st.hdr[:]); err != nil {
		return rq, err
	}
	h, err := parseReqHeader(st.hdr[:])
	if err != nil {
		return rq, err
	}
	n := int(h.Entries) * entryLen
	if cap(st.entries) < n {
		st.entries = make([]byte, n)
	}
	st.entries = st.entries[:n]
	if _, err := io.ReadFull(st.br, st.entries); err != nil {
		return rq, err
	}
	st.ranges, rq.total, err = parseEntries(st.entries, st.ranges)
	if err != nil {
		return rq, err
	}
	if h.Flags&flagCompressed != 0 {
		if err := s.checkCompressed(&h, rq.total); err != nil {
			return rq, err
		}
	} else if h.Type == reqWrite && rq.total != h.Payload {
		return rq, fmt.Errorf("%w: entries add up to %d bytes, header says %d", core.ErrMalformed, rq.total, h.Payload)
	}
	rq.h, rq.key = h, core.InboundKey{Peer: st.peer, UID: h.UID}
	return rq, nil
}

// admit checks a request against the registry and the inbound table and
// takes a Use of its region; the caller releases it. A refusal is recorded
// in the inbound table and returned.
func (s *server) admit(st *connState, rq *inFrame) (*core.Region, error) {
	h := &rq.h
	region, err := s.check(h, st.ranges)
	if err == nil {
		err = s.env.Inbound.Admit(rq.key, h.Instance, h.Parts)
	}
	if err != nil {
		s.env.Inbound.Refuse(rq.key, h.Instance, h.Parts, err)
		return nil, err
	}
	if err := region.Use(); err != nil {
		s.env.Inbound.Complete(rq.key, h.Instance, err)
		return nil, err
	}
	return region, nil
}

// refuse answers a refused request with why, after draining a write's
// payload so that the stream stays in step. A request naming memory with
// a wrong token is answered and then closes the stream.
func (s *server) refuse(st *connState, rq *inFrame, why error) error {
	if rq.h.Type == reqWrite {
		if _, err := io.CopyN(io.Discard, st.br, int64(rq.h.Payload)); err != nil {
			return err
		}
	}
	s.log.Debug("tcp backend: refused a request", "peer", st.peer, "uid", rq.h.UID, "err", why)
	if err := s.respond(st, rq.h.Type, core.CodeOf(why), why.Error(), 0); err != nil {
		return err
	}
	if errors.Is(why, core.ErrAccessDenied) {
		// Forged or stale capability: answered, then the stream goes.
		st.bw.Flush()
		return why
	}
	return nil
}

// serveWrite lands a write's payload in the region and acknowledges it.
func (s *server) serveWrite(st *connState, rq *inFrame, region *core.Region) error {
	var deviceErr, err error
	if rq.h.Flags&flagCompressed != 0 {
		deviceErr, err = s.receiveCompressed(st, region, st.ranges, rq.h.Payload)
	} else {
		deviceErr, err = s.receive(st, region, st.ranges, rq.h.Payload)
	}
	lattrace.Mark(lattrace.TargetLand)
	region.Release()
	if err != nil {
		err = core.Errorf(core.ErrConnection, "connection from engine %q lost in the middle of a write: %w", st.peer, err)
		s.env.Inbound.Complete(rq.key, rq.h.Instance, err)
		return err
	}
	s.env.Inbound.Complete(rq.key, rq.h.Instance, deviceErr)
	if deviceErr != nil {
		// The payload was read; the stream is in step.
		s.log.Warn("tcp backend: write failed", "peer", st.peer, "uid", rq.h.UID, "err", deviceErr)
		return s.respond(st, reqWrite, core.CodeOf(deviceErr), deviceErr.Error(), 0)
	}
	return s.respond(st, reqWrite, core.StatusSuccess, "", 0)
}

// serveRead answers a read with the bytes of the region.
func (s *server) serveRead(st *connState, rq *inFrame, region *core.Region) error {
	deviceErr, err := s.sendData(st, region, st.ranges, rq.total)
	region.Release()
	if err != nil {
		err = core.Errorf(core.ErrConnection, "connection from engine %q lost in the middle of a read: %w", st.peer, err)
		s.env.Inbound.Complete(rq.key, rq.h.Instance, err)
		return err
	}
	s.env.Inbound.Complete(rq.key, rq.h.Instance, deviceErr)
	if deviceErr != nil {
		// Nothing of the response was sent yet.
		s.log.Warn("tcp backend: read of GPU memory failed", "peer", st.peer, "uid", rq.h.UID, "err", deviceErr)
		return s.respond(st, reqRead, core.CodeOf(deviceErr), deviceErr.Error(), 0)
	}
	return nil
}

// check validates a request against the registry, its token included,
// without touching memory.
func (s *server) check(h *reqHeader, ranges []core.Range) (*core.Region, error) {
	r, err := s.env.Registry.Resolve(h.MemID, h.Token)
	if err != nil {
		return nil, err
	}
	for i, e := range ranges {
		if err := r.CheckRange(e.RemoteOffset, e.Size); err != nil {
			return nil, fmt.Errorf("entry %d: %w", i, err)
		}
	}
	if !r.Host && s.env.GPU == nil {
		return nil, core.Errorf(core.ErrGPUOp, "memory %d is GPU memory and no GPU driver is loaded", r.ID)
	}
	return r, nil
}

// receive reads a write's payload into the region, straight into its
// memory when the CPU can address it. GPU memory is filled through the
// driver's staging ring: the socket fills one page-locked chunk while the
// previous ones are copied to the device. A failed device copy is returned
// as deviceErr once the rest of the payload has been drained (the stream stays
// in step, the frame is refused); streamErr is a broken stream.
func (s *server) receive(st *connState, r *core.Region, ranges []core.Range, payload uint64) (deviceErr, streamErr error) {
	if hook := s.beforeLand.Load(); hook != nil {
		(*hook)()
	}
	if st.sr.in.gone() {
		return nil, errInitiatorGone
	}
	if r.Host {
		return nil, s.receiveHost(st, r, ranges)
	}
	st.spans = regionSpans(st.spans, r, ranges)
	var got uint64
	var netErr error
	deviceErr = s.env.GPU.WriteStaged(r.Device, st.spans, func(b []byte) error {
		if _, err := io.ReadFull(st.br, b); err != nil {
			netErr = err
			return err
		}
		got += uint64(len(b))
		return nil
	})
	if netErr != nil {
		return nil, netErr
	}
	if deviceErr != nil {
		if _, err := io.CopyN(io.Discard, st.br, int64(payload-got)); err != nil {
			return nil, err
		}
		return core.Errorf(core.ErrGPUOp, "copy to GPU %d memory %d: %w", r.Device, r.ID, deviceErr), nil
	}
	return nil, nil
}

// receiveHost reads a write's payload straight into host memory: first
// what the stream's buffer holds, then with vectored reads of the socket
// into the ranges themselves (no copy through the buffer).
func (s *server) receiveHost(st *connState, r *core.Region, ranges []core.Range) error {
	dst := st.group[:0]
	for _, e := range ranges {
		if e.Size > 0 {
			dst = append(dst, r.Bytes(e.RemoteOffset, e.Size))
		}
	}
	defer func() {
		clear(dst) // no pointers into the region kept past the frame
		st.group = dst[:0]
	}()
	rest := dst
	for len(rest) > 0 && st.br.Buffered() > 0 {
		n, _ := st.br.Read(rest[0]) // from the buffer only: it holds bytes
		rest = advance(rest, n)
	}
	for len(rest) > 0 {
		n, err := st.sr.ReadVec(rest, st.iov)
		if err != nil {
			return err
		}
		rest = advance(rest, n)
	}
	return nil
}

// regionSpans appends to spans[:0] the device memory of ranges (their
// remote offsets) in r.
func regionSpans(spans []core.DeviceSpan, r *core.Region, ranges []core.Range) []core.DeviceSpan {
	spans = spans[:0]
	for _, e := range ranges {
		spans = append(spans, core.DeviceSpan{Addr: r.Addr + uintptr(e.RemoteOffset), Size: e.Size})
	}
	return spans
}

// sendData answers a read with the requested bytes. GPU memory goes
// through the driver's staging ring: each chunk is written while the next
// ones are copied from the device. A failed device copy before the first
// chunk is returned as deviceErr, with nothing sent (the caller answers with an
// error); after it, the response is half sent and the stream is broken.
func (s *server) sendData(st *connState, r *core.Region, ranges []core.Range, total uint64) (deviceErr, streamErr error) {
	var hb [respHeaderLen]byte
	h := respHeader{Type: respData, Code: core.StatusSuccess, Payload: total}
	h.put(hb[:])
	if !r.Host {
		st.spans = regionSpans(st.spans, r, ranges)
		started := false
		var netErr error
		deviceErr = s.env.GPU.ReadStaged(r.Device, st.spans, func(b []byte) error {
			if !started {
				started = true
				if _, err := st.bw.Write(hb[:]); err != nil {
					netErr = err
					return err
				}
				if err := st.bw.Flush(); err != nil {
					netErr = err
					return err
				}
			}
			if _, err := st.sw.Write(b); err != nil {
				netErr = err
				return err
			}
			return nil
		})
		switch {
		case netErr != nil:
			return nil, netErr
		case deviceErr != nil && !started:
			return core.Errorf(core.ErrGPUOp, "copy from GPU %d memory %d: %w", r.Device, r.ID, deviceErr), nil
		case deviceErr != nil:
			return nil, core.Errorf(core.ErrGPUOp, "copy from GPU %d memory %d (response half sent): %w", r.Device, r.ID, deviceErr)
		}
		return nil, nil
	}
	if _, err := st.bw.Write(hb[:]); err != nil {
		return nil, err
	}
	if err := st.bw.Flush(); err != nil {
		return nil, err
	}
	st.bufs = st.bufs[:0]
	for _, e := range ranges {
		st.bufs = append(st.bufs, r.Bytes(e.RemoteOffset, e.Size))
	}
	return nil, st.sw.writeBuffers(st.bufs, &st.group)
}

func (s *server) respond(st *connState, typ uint8, code core.StatusCode, msg string, payload uint64) error {
	if len(msg) > maxMessageLen {
		msg = msg[:maxMessageLen]
	}
	rt := respAck
	if typ == reqRead {
		rt = respData
	}
	var hb [respHeaderLen]byte
	h := respHeader{Type: rt, Code: code, MsgLen: uint32(len(msg)), Payload: payload}
	h.put(hb[:])
	if _, err := st.bw.Write(hb[:]); err != nil {
		return err
	}
	_, err := st.bw.WriteString(msg)
	return err
}
