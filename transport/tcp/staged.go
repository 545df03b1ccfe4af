package tcp

import (
	"io"

	"github.com/mori-go/mori-go/core"
)

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
		if err := s.writeAll(iov); err != nil {
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
		if _, err := io.ReadFull(&s.rd, b); err != nil {
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
		if _, err := io.CopyN(io.Discard, &s.rd, int64(f.payload-got)); err != nil {
			return s.connErr("read data", err)
		}
	}
	return nil
}
