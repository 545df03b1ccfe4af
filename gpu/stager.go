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
}

type stagerSlot struct {
	host    unsafe.Pointer // page-locked, slotSize bytes
	buf     []byte         // view of host
	stream  unsafe.Pointer
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
			host, err := d.b.allocHost(slotSize)
			if err != nil {
				return err
			}
			st, err := d.b.newStream(device)
			if err != nil {
				_ = d.b.freeHost(host)
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
	return s.d.call(func() error { return s.d.b.syncStream(sl.stream, s.device) })
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
func (s *Stager) ReadDevice(src uintptr, n uint64, consume func([]byte) error) (err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.start(); err != nil || n == 0 {
		return err
	}
	defer func() {
		if derr := s.drain(); err == nil {
			err = derr
		}
	}()
	chunks := (n + uint64(s.slotSize) - 1) / uint64(s.slotSize)
	issue := func(i uint64) error {
		sl, l := s.chunk(i, n)
		err := s.d.call(func() error {
			return s.d.b.copyD2H(sl.stream, s.device, sl.host, src+uintptr(i*uint64(s.slotSize)), l)
		})
		sl.pending = err == nil
		return err
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
func (s *Stager) WriteDevice(dst uintptr, n uint64, produce func([]byte) error) (err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.start(); err != nil || n == 0 {
		return err
	}
	defer func() {
		if derr := s.drain(); err == nil {
			err = derr
		}
	}()
	chunks := (n + uint64(s.slotSize) - 1) / uint64(s.slotSize)
	for i := range chunks {
		sl, l := s.chunk(i, n)
		if err := s.wait(sl); err != nil { // the slot's previous chunk has left it
			return err
		}
		if err := produce(sl.buf[:l]); err != nil {
			return err
		}
		err := s.d.call(func() error {
			return s.d.b.copyH2D(sl.stream, s.device, dst+uintptr(i*uint64(s.slotSize)), sl.host, l)
		})
		if err != nil {
			return err
		}
		sl.pending = true
	}
	return nil
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
			errs = append(errs, s.d.b.destroyStream(sl.stream, s.device), s.d.b.freeHost(sl.host))
		}
		return errors.Join(errs...)
	}))
	s.slots = nil
	return errors.Join(errs...)
}
