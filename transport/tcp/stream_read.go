package tcp

import (
	"io"
	"time"

	"github.com/mori-go/mori-go/core"
	"github.com/mori-go/mori-go/internal/lattrace"
)

// readResponse reads the response to the oldest frame in flight, and a
// read's data into local memory. refused is the target's refusal of the
// frame; err breaks the stream (a broken connection, a response out of
// step). msg is scratch for the refusal's message.
func (s *stream) readResponse(msg *[]byte) (f *frame, refused, err error) {
	var hb [respHeaderLen]byte
	if _, err := io.ReadFull(&s.rd, hb[:]); err != nil {
		return nil, nil, s.connErr("read response", err)
	}
	lattrace.Mark(lattrace.InitWake)
	h, err := parseRespHeader(hb[:])
	if err != nil {
		return nil, nil, core.Errorf(core.ErrConnection, "engine %q at %s sent a bad response: %w", s.p.key, s.p.addr, err)
	}
	if cap(*msg) < int(h.MsgLen) {
		*msg = make([]byte, h.MsgLen) // up to maxMessageLen
	}
	*msg = (*msg)[:h.MsgLen]
	if _, err := io.ReadFull(&s.rd, *msg); err != nil {
		return nil, nil, s.connErr("read response", err)
	}
	s.mu.Lock()
	if len(s.inflight) == 0 {
		s.mu.Unlock()
		return nil, nil, core.Errorf(core.ErrConnection, "engine %q at %s sent a response to no request", s.p.key, s.p.addr)
	}
	f = s.inflight[0]
	s.mu.Unlock()
	if !h.answers(f) {
		return nil, nil, core.Errorf(core.ErrConnection, "engine %q at %s sent a response out of step (type %#x, %d bytes)", s.p.key, s.p.addr, h.Type, h.Payload)
	}
	switch {
	case h.Code != core.StatusSuccess:
		return f, core.Errorf(ErrRefusedCode(h.Code), "engine %q refused: %s", s.p.key, *msg), nil
	case h.Type == respData:
		if err := s.readData(f); err != nil {
			return nil, nil, err
		}
	}
	return f, nil, nil
}

// answers reports whether h can be the response to f: an acknowledgement
// of a write, the data of a read (of the size asked for), or a refusal
// with no data.
func (h *respHeader) answers(f *frame) bool {
	want := respAck
	if f.t.Op == core.OpRead {
		want = respData
	}
	switch {
	case h.Type != want:
		return false
	case h.Code != core.StatusSuccess || h.Type == respAck:
		return h.Payload == 0
	default:
		return h.Payload == f.payload
	}
}

// retire takes f, answered, off the frames in flight. It reports false
// when the stream broke meanwhile (fail has ended f's transfer).
func (s *stream) retire(f *frame) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.broken != nil {
		return false
	}
	s.inflight[0] = nil
	s.inflight = s.inflight[1:]
	s.inflightBytes -= int(f.payload)
	if len(s.inflight) == 0 {
		s.setStall(time.Time{})
	} else {
		s.setStall(time.Now().Add(s.p.b.cfg.StallTimeout))
	}
	if len(s.queue) > 0 && !s.writing {
		s.cond.Signal() // the writer may be waiting for room in the window
	}
	return true
}

// readData reads a read response's payload into the local region.
func (s *stream) readData(f *frame) error {
	t := f.t
	if err := t.Local.Use(); err != nil {
		// The local memory is gone: drain the payload to stay in step.
		t.FailErr(err)
		if _, err := io.CopyN(io.Discard, &s.rd, int64(f.payload)); err != nil {
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
				if _, err := io.CopyN(io.Discard, &s.rd, int64(rest)); err != nil {
					return s.connErr("read data", err)
				}
				return nil
			}
			n := min(r.Size-off, maxReadBetweenChecks)
			if _, err := io.ReadFull(&s.rd, t.Local.Bytes(r.LocalOffset+off, n)); err != nil {
				return s.connErr("read data", err)
			}
			off += n
		}
	}
	return nil
}

// maxReadBetweenChecks is the most bytes of a read response written into
// local memory between two checks that its transfer is still running.
const maxReadBetweenChecks = 256 << 10
