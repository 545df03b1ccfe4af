package gpu

import (
	"errors"
	"fmt"
	"sync"
	"unsafe"
)

// Stager moves device memory through a ring of page-locked host slots, for
// transports (TCP) that need the bytes in host memory. Each slot has its own
// stream. ReadDevice starts the copies of the first chunks into all slots
// at once and, while the consumer works on chunk i, the copies of the
// chunks after it are already running; WriteDevice lets the producer fill
// slot i+1 while chunk i is being copied to the device.
//
// A Stager serves one transfer at a time; concurrent calls wait for each
// other. Close it before closing its Driver.
type Stager struct {
	d        *Driver
	device   int
	slotSize int

	mu     sync.Mutex
	slots  []stagerSlot
	closed bool
	// broken is set when a driver call failed: the slots' streams may be
	// unusable. Errors of the consumer or producer (a socket) leave the
	// Stager whole, and the Driver's pool keeps it.
	broken bool
}

type stagerSlot struct {
	host    unsafe.Pointer // page-locked, slotSize bytes
	buf     []byte         // view of host
	stream  stream
	pending bool // a copy is queued on stream and not yet waited for
}

// NewStager allocates slots page-locked buffers of slotSize bytes and one
// stream per slot on device. Two slots are the least that overlap copies
// with the consumer; three or four keep the copy engine busy when the
// consumer is uneven.
func NewStager(d *Driver, device int, slots int, slotSize int) (*Stager, error) {
	if slots < 1 || slotSize < 1 {
		return nil, fmt.Errorf("gpu: NewStager(%d slots of %d bytes): both must be positive", slots, slotSize)
	}
	s := &Stager{d: d, device: device, slotSize: slotSize}
	err := d.call(func() error {
		if device < 0 || device >= d.b.deviceCount() {
			return errNoDevice(device, d.b.deviceCount())
		}
		for range slots {
			host, err := d.b.allocHost(slotSize, device)
			if err != nil {
				return err
			}
			st, err := d.b.newStream(device)
			if err != nil {
				_ = d.b.freeHost(host, device)
				return err
			}
			s.slots = append(s.slots, stagerSlot{host: host, buf: unsafe.Slice((*byte)(host), slotSize), stream: st})
		}
		return nil
	})
	if err != nil {
		_ = s.Close()
		return nil, err
	}
	d.log.Debug("gpu: stager ready", "device", device, "slots", slots, "slot_size", slotSize)
	return s, nil
}

// SlotSize is the size of the chunks given to consume and produce.
func (s *Stager) SlotSize() int { return s.slotSize }

// Span is a range of device memory: Size bytes at Addr. Like Copy, it is
// an alias of an unnamed struct type, so that core.DeviceSpan, declared
// the same way, is the same type.
type Span = struct {
	Addr uintptr
	Size uint64
}

// spanTotal returns the bytes in spans, refusing ranges that wrap around
// the address space and totals that overflow.
func spanTotal(spans []Span) (uint64, error) {
	var n uint64
	for i, sp := range spans {
		if uint64(sp.Addr)+sp.Size < uint64(sp.Addr) {
			return 0, fmt.Errorf("gpu: span %d (%#x+%d) wraps around the address space", i, sp.Addr, sp.Size)
		}
		if n+sp.Size < n {
			return 0, fmt.Errorf("gpu: spans add up to more than 2^64 bytes")
		}
		n += sp.Size
	}
	return n, nil
}

// spanCursor walks a list of spans as one stream of bytes.
type spanCursor struct {
	spans []Span
	i     int
	off   uint64 // into spans[i]
}

// take calls f for each piece of device memory that makes up the next n
// bytes of the stream, with the offset of the piece in those n bytes. The
// caller never asks for more bytes than are left.
func (c *spanCursor) take(n uint64, f func(addr uintptr, at, size uint64) error) error {
	for at := uint64(0); at < n; {
		for c.off == c.spans[c.i].Size {
			c.i++
			c.off = 0
		}
		sp := c.spans[c.i]
		k := min(sp.Size-c.off, n-at)
		if err := f(sp.Addr+uintptr(c.off), at, k); err != nil {
			return err
		}
		c.off += k
		at += k
	}
	return nil
}

// chunk returns the slot and length of chunk i of an n-byte transfer.
func (s *Stager) chunk(i, n uint64) (*stagerSlot, uint64) {
	off := i * uint64(s.slotSize)
	return &s.slots[i%uint64(len(s.slots))], min(uint64(s.slotSize), n-off)
}

// wait waits for the copy queued on sl, if any.
func (s *Stager) wait(sl *stagerSlot) error {
	if !sl.pending {
		return nil
	}
	sl.pending = false
	return s.driverCall(func() error { return s.d.waitStream(sl.stream, s.device) })
}

// driverCall runs f as a Driver call and marks s broken when it fails.
func (s *Stager) driverCall(f func() error) error {
	err := s.d.call(f)
	if err != nil {
		s.broken = true
	}
	return err
}

// drain waits for every queued copy, so that no DMA into or out of a slot
// outlives the call that started it.
func (s *Stager) drain() error {
	var errs []error
	for i := range s.slots {
		errs = append(errs, s.wait(&s.slots[i]))
	}
	return errors.Join(errs...)
}

func (s *Stager) start() error {
	if s.closed {
		return errors.New("gpu: stager is closed")
	}
	return nil
}

// ReadDevice copies n bytes of device memory at src to the host and calls
// consume with them in order, one chunk of at most SlotSize bytes at a
// time. The slice is valid only during the call. An error from consume or
// from the driver ends the transfer and is returned.
func (s *Stager) ReadDevice(src uintptr, n uint64, consume func([]byte) error) error {
	return s.ReadDeviceSpans([]Span{{Addr: src, Size: n}}, consume)
}

// ReadDeviceSpans is ReadDevice for a gather list: the bytes of spans, in
// order, make one stream that is cut into chunks of SlotSize bytes (a chunk
// may hold the end of one span and the start of the next). The copies of
// the chunks after the one being consumed run meanwhile, one stream per
// slot.
func (s *Stager) ReadDeviceSpans(spans []Span, consume func([]byte) error) (err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.start(); err != nil {
		return err
	}
	n, err := spanTotal(spans)
	if err != nil || n == 0 {
		return err
	}
	defer func() {
		if derr := s.drain(); err == nil {
			err = derr
		}
	}()
	chunks := (n + uint64(s.slotSize) - 1) / uint64(s.slotSize)
	cur := spanCursor{spans: spans}
	issue := func(i uint64) error {
		sl, l := s.chunk(i, n)
		sl.pending = true // even a failed call may have queued some pieces
		return s.driverCall(func() error {
			return cur.take(l, func(addr uintptr, at, k uint64) error {
				return s.d.b.copyD2H(sl.stream, s.device, unsafe.Add(sl.host, at), addr, k)
			})
		})
	}
	ahead := min(chunks, uint64(len(s.slots)))
	for i := range ahead {
		if err := issue(i); err != nil {
			return err
		}
	}
	for i := range chunks {
		sl, l := s.chunk(i, n)
		if err := s.wait(sl); err != nil {
			return err
		}
		if err := consume(sl.buf[:l]); err != nil {
			return err
		}
		if next := i + ahead; next < chunks {
			if err := issue(next); err != nil {
				return err
			}
		}
	}
	return nil
}

// WriteDevice copies n bytes to device memory at dst, chunk by chunk:
// produce must fill the whole slice it is given (at most SlotSize bytes),
// after which the chunk is copied to the device while produce fills the
// next slot. WriteDevice returns when all bytes are on the device, or the
// first error from produce or the driver.
func (s *Stager) WriteDevice(dst uintptr, n uint64, produce func([]byte) error) error {
	return s.WriteDeviceSpans([]Span{{Addr: dst, Size: n}}, produce)
}

// WriteDeviceSpans is WriteDevice for a scatter list: the bytes produce
// gives, in order, fill spans one after the other.
func (s *Stager) WriteDeviceSpans(spans []Span, produce func([]byte) error) (err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.start(); err != nil {
		return err
	}
	n, err := spanTotal(spans)
	if err != nil || n == 0 {
		return err
	}
	defer func() {
		if derr := s.drain(); err == nil {
			err = derr
		}
	}()
	chunks := (n + uint64(s.slotSize) - 1) / uint64(s.slotSize)
	cur := spanCursor{spans: spans}
	for i := range chunks {
		sl, l := s.chunk(i, n)
		if err := s.wait(sl); err != nil { // the slot's previous chunk has left it
			return err
		}
		if err := produce(sl.buf[:l]); err != nil {
			return err
		}
		sl.pending = true
		err := s.driverCall(func() error {
			return cur.take(l, func(addr uintptr, at, k uint64) error {
				return s.d.b.copyH2D(sl.stream, s.device, addr, unsafe.Add(sl.host, at), k)
			})
		})
		if err != nil {
			return err
		}
	}
	return nil
}

// borrowStager lends a Stager of device from the Driver's pool, making one
// when none is idle. returnStager gives it back.
func (d *Driver) borrowStager(device int) (*Stager, error) {
	d.poolMu.Lock()
	if d.stagingClosed {
		d.poolMu.Unlock()
		return nil, errClosed
	}
	d.staging.Add(1)
	if ss := d.stagers[device]; len(ss) > 0 {
		s := ss[len(ss)-1]
		d.stagers[device] = ss[:len(ss)-1]
		d.poolMu.Unlock()
		return s, nil
	}
	d.poolMu.Unlock()
	s, err := NewStager(d, device, d.slots, d.slotSize)
	if err != nil {
		d.staging.Done()
		return nil, err
	}
	return s, nil
}

// returnStager puts s back in the pool, or closes it when a driver call
// failed in it (its streams may be unusable), the pool is full or the
// Driver is closing. A transfer that failed for another reason (the
// network) keeps its Stager: freeing page-locked memory synchronizes the
// whole device, inside the application's process.
func (d *Driver) returnStager(device int, s *Stager) {
	s.mu.Lock()
	broken := s.broken
	s.mu.Unlock()
	d.poolMu.Lock()
	keep := !broken && !d.stagingClosed && len(d.stagers[device]) < maxIdleStagers
	if keep {
		d.stagers[device] = append(d.stagers[device], s)
	}
	d.poolMu.Unlock()
	if !keep {
		if err := s.Close(); err != nil {
			d.log.Warn("gpu: closing a stager", "device", device, "err", err)
		}
	}
	d.staging.Done()
}

// ReadStaged copies the device memory of spans (all on device) to the
// host through a pooled Stager (Options.StagingSlots page-locked slots of
// Options.StagingSlotSize bytes) and calls consume with the bytes, in
// order, a chunk at a time, while the copies of the next chunks run: see
// Stager.ReadDeviceSpans. Concurrent calls use different Stagers.
func (d *Driver) ReadStaged(device int, spans []Span, consume func([]byte) error) error {
	s, err := d.borrowStager(device)
	if err != nil {
		return err
	}
	err = s.ReadDeviceSpans(spans, consume)
	d.returnStager(device, s)
	return err
}

// WriteStaged fills the device memory of spans (all on device) with the
// bytes produce gives, through a pooled Stager: produce fills one slot
// while the previous ones are copied to the device. See
// Stager.WriteDeviceSpans.
func (d *Driver) WriteStaged(device int, spans []Span, produce func([]byte) error) error {
	s, err := d.borrowStager(device)
	if err != nil {
		return err
	}
	err = s.WriteDeviceSpans(spans, produce)
	d.returnStager(device, s)
	return err
}

// Close waits for queued copies and releases the slots and streams.
func (s *Stager) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil
	}
	s.closed = true
	errs := []error{s.drain()}
	errs = append(errs, s.d.call(func() error {
		var errs []error
		for _, sl := range s.slots {
			errs = append(errs, s.d.b.destroyStream(sl.stream, s.device), s.d.b.freeHost(sl.host, s.device))
		}
		return errors.Join(errs...)
	}))
	s.slots = nil
	return errors.Join(errs...)
}
