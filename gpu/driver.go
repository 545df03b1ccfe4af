package gpu

import (
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"unsafe"
)

//go:generate go tool stringer -type=Vendor -linecomment

// Vendor is a GPU vendor, and so a driver library.
type Vendor int

// Vendors.
const (
	VendorNone Vendor = iota // none
	// VendorNVIDIA: the CUDA driver API, libcuda.so.1.
	VendorNVIDIA // nvidia
	// VendorAMD: the HIP runtime, libamdhip64.so.
	VendorAMD // amd
)

// Library names tried for each vendor, already-loaded copies first. torch's
// ROCm wheels ship libamdhip64 with a versioned SONAME, which RTLD_NOLOAD
// matches.
var (
	cudaLibraries = []string{"libcuda.so.1", "libcuda.so"}
	hipLibraries  = []string{"libamdhip64.so", "libamdhip64.so.7", "libamdhip64.so.6"}
)

// Options configure Open.
type Options struct {
	// Library is the path of the driver library to load instead of the
	// vendor's default (tests point it at a stand-in). With Library set and
	// Vendor left as VendorNone, the vendor is told from the library's
	// symbols (cuInit or hipInit).
	Library string
	// Vendor restricts Open to one vendor. VendorNone tries NVIDIA, then AMD.
	Vendor Vendor
	// Logger receives the package's logs. Nil discards them.
	Logger *slog.Logger
	// StagingSlots and StagingSlotSize shape the Stagers that ReadStaged
	// and WriteStaged borrow from the Driver's pool: that many page-locked
	// slots of that many bytes each (defaults 4 and 256 KiB). Slots smaller
	// than a transport's frames let the copy of one slot overlap the
	// network transfer of the next.
	StagingSlots    int
	StagingSlotSize int
}

// Default staging ring of the Driver's pooled Stagers.
const (
	DefaultStagingSlots    = 4
	DefaultStagingSlotSize = 256 << 10
)

// maxIdleStagers bounds the idle Stagers the Driver keeps per device; more
// are closed when returned.
const maxIdleStagers = 64

// backend is one vendor's driver. Calls that take a device run with that
// device current on the calling thread and leave the thread as they found
// it. Copies are asynchronous on the stream s, which belongs to device.
// After a sticky error (see stickyState) every call fails at once.
type backend interface {
	deviceCount() int
	// pointerInfo asks about ptr; hint is the device the caller expects
	// it on (-1: none), whose context a query may need.
	pointerInfo(ptr uintptr, hint int) (PointerInfo, error)
	allocDevice(n uint64, device int) (uintptr, error)
	freeDevice(ptr uintptr, device int) error
	// allocHost and freeHost: page-locked memory, allocated in device's
	// context where the driver needs one.
	allocHost(n int, device int) (unsafe.Pointer, error)
	freeHost(p unsafe.Pointer, device int) error
	newStream(device int) (stream, error)
	destroyStream(s stream, device int) error
	// recordDone records s.done after the work queued on s; queryDone
	// reports whether that work has finished, without blocking.
	recordDone(s stream, device int) error
	queryDone(s stream) (bool, error)
	copyD2H(s stream, device int, dst unsafe.Pointer, src uintptr, n uint64) error
	copyH2D(s stream, device int, dst uintptr, src unsafe.Pointer, n uint64) error
	copyD2D(s stream, device int, dst, src uintptr, n uint64) error
	ipcGet(ptr uintptr, device int) (IPCHandle, error)
	ipcOpen(h *IPCHandle, device int) (uintptr, error)
	ipcClose(ptr uintptr, device int) error
	// dmabuf exports [ptr, ptr+size) of the allocation info describes and
	// returns the fd and the offset of ptr in it.
	dmabuf(ptr uintptr, size uint64, info PointerInfo) (fd int, offset uint64, err error)
	pciBusID(device int) (string, error)
	close() error
}

// stream is a driver stream and the event that waits for it.
type stream struct {
	h    unsafe.Pointer // CUstream, hipStream_t
	done unsafe.Pointer // CUevent, hipEvent_t
}

// Driver is an open GPU driver. Its methods are safe for concurrent use.
// Close waits for calls in progress.
type Driver struct {
	vendor Vendor
	lib    string
	log    *slog.Logger
	b      backend

	mu     sync.RWMutex // held for reading by every call, for writing by Close
	closed bool

	poolMu  sync.Mutex
	streams map[int][]stream // idle streams per device, for the synchronous copies

	// Pooled Stagers for ReadStaged and WriteStaged, guarded by poolMu.
	// Close sets stagingClosed and waits for staging (the Stagers lent
	// out) before it closes anything.
	slots, slotSize int
	stagers         map[int][]*Stager // idle Stagers per device
	stagingClosed   bool
	staging         sync.WaitGroup
}

// Open loads a GPU driver. With zero Options it tries libcuda.so.1, then
// libamdhip64.so; when neither is usable, the error wraps ErrNotSupported.
func Open(opts Options) (*Driver, error) {
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if opts.StagingSlots < 0 || opts.StagingSlotSize < 0 {
		return nil, fmt.Errorf("gpu: staging of %d slots of %d bytes: sizes must not be negative", opts.StagingSlots, opts.StagingSlotSize)
	}
	if opts.StagingSlots == 0 {
		opts.StagingSlots = DefaultStagingSlots
	}
	if opts.StagingSlotSize == 0 {
		opts.StagingSlotSize = DefaultStagingSlotSize
	}
	if opts.Library != "" {
		return open(opts.Vendor, []string{opts.Library}, &opts, log)
	}
	switch opts.Vendor {
	case VendorNVIDIA:
		return open(VendorNVIDIA, cudaLibraries, &opts, log)
	case VendorAMD:
		return open(VendorAMD, hipLibraries, &opts, log)
	case VendorNone:
	default:
		return nil, fmt.Errorf("gpu: unknown vendor %v", opts.Vendor)
	}
	d, nvErr := open(VendorNVIDIA, cudaLibraries, &opts, log)
	if nvErr == nil {
		return d, nil
	}
	d, amdErr := open(VendorAMD, hipLibraries, &opts, log)
	if amdErr == nil {
		return d, nil
	}
	// A driver that is present but fails is a real error, not an absence.
	switch {
	case !errors.Is(nvErr, ErrNotSupported):
		return nil, nvErr
	case !errors.Is(amdErr, ErrNotSupported):
		return nil, amdErr
	}
	err := fmt.Errorf("gpu: no GPU driver: nvidia: %w; amd: %w", nvErr, amdErr)
	log.Debug("gpu: no driver", "err", err)
	return nil, err
}

func open(vendor Vendor, names []string, opts *Options, log *slog.Logger) (*Driver, error) {
	lib, err := openLibrary(names)
	if err != nil {
		return nil, err
	}
	if vendor == VendorNone {
		switch {
		case lib.has("cuInit"):
			vendor = VendorNVIDIA
		case lib.has("hipInit"):
			vendor = VendorAMD
		default:
			return nil, fmt.Errorf("%w: %s has neither cuInit nor hipInit", ErrNotSupported, lib.name)
		}
	}
	var b backend
	switch vendor {
	case VendorNVIDIA:
		b, err = newCUDA(lib, log)
	case VendorAMD:
		b, err = newHIP(lib, log)
	default:
		err = fmt.Errorf("gpu: unknown vendor %v", vendor)
	}
	if err != nil {
		return nil, err
	}
	if b.deviceCount() == 0 {
		_ = b.close()
		return nil, fmt.Errorf("%w: %s driver %s reports no devices", ErrNotSupported, vendor, lib.name)
	}
	log.Info("gpu: driver opened", "vendor", vendor.String(), "library", lib.name,
		"already_loaded", lib.reused, "devices", b.deviceCount())
	return &Driver{vendor: vendor, lib: lib.name, log: log, b: b, streams: make(map[int][]stream),
		slots: opts.StagingSlots, slotSize: opts.StagingSlotSize, stagers: make(map[int][]*Stager)}, nil
}

// enter starts a call; the caller must call d.mu.RUnlock when it returns nil.
func (d *Driver) enter() error {
	d.mu.RLock()
	if d.closed {
		d.mu.RUnlock()
		return errClosed
	}
	return nil
}

// call runs f as one Driver call: it fails after Close, and Close waits
// for it. f must not call back into the Driver's exported methods.
func (d *Driver) call(f func() error) error {
	if err := d.enter(); err != nil {
		return err
	}
	defer d.mu.RUnlock()
	return f()
}

// Vendor says which driver is open.
func (d *Driver) Vendor() Vendor { return d.vendor }

// DeviceCount is the number of devices the driver sees (after
// CUDA_VISIBLE_DEVICES / HIP_VISIBLE_DEVICES).
func (d *Driver) DeviceCount() int { return d.b.deviceCount() }

// Close releases the Driver's streams, pooled Stagers and contexts. It
// first waits for ReadStaged and WriteStaged calls in progress. Pinned
// buffers, Stagers of the caller's and IPC mappings must be released
// before. The library stays loaded. Close is idempotent.
func (d *Driver) Close() error {
	d.poolMu.Lock()
	d.stagingClosed = true
	idle := d.stagers
	d.stagers = nil
	d.poolMu.Unlock()
	d.staging.Wait()
	var stagerErrs []error
	for _, ss := range idle {
		for _, s := range ss {
			stagerErrs = append(stagerErrs, s.Close())
		}
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.closed {
		return nil
	}
	d.closed = true
	errs := stagerErrs
	for device, ss := range d.streams {
		for _, s := range ss {
			if err := d.b.destroyStream(s, device); err != nil {
				errs = append(errs, err)
			}
		}
	}
	d.streams = nil
	errs = append(errs, d.b.close())
	d.log.Info("gpu: driver closed", "vendor", d.vendor.String(), "library", d.lib)
	for i, err := range errs {
		if errors.Is(err, ErrDeviceLost) {
			errs[i] = nil // a lost device releases nothing: not Close's failure
		}
	}
	return errors.Join(errs...)
}
