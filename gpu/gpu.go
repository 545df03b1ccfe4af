package gpu

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"runtime"
	"sync"
	"unsafe"
)

// Vendor is a GPU vendor, and so a driver library.
type Vendor int

// Vendors.
const (
	VendorNone   Vendor = iota
	VendorNVIDIA        // CUDA driver API, libcuda.so.1
	VendorAMD           // HIP runtime, libamdhip64.so
)

func (v Vendor) String() string {
	switch v {
	case VendorNone:
		return "none"
	case VendorNVIDIA:
		return "nvidia"
	case VendorAMD:
		return "amd"
	}
	return fmt.Sprintf("Vendor(%d)", int(v))
}

// ErrNotSupported means that there is no usable GPU driver in this process
// (no library, no device), or that the driver lacks a feature.
var ErrNotSupported = errors.New("gpu: not supported")

// errClosed is returned by calls on a closed Driver.
var errClosed = errors.New("gpu: driver is closed")

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
type backend interface {
	deviceCount() int
	pointerInfo(ptr uintptr) (PointerInfo, error)
	allocDevice(n uint64, device int) (uintptr, error)
	freeDevice(ptr uintptr, device int) error
	allocHost(n int) (unsafe.Pointer, error)
	freeHost(p unsafe.Pointer) error
	newStream(device int) (unsafe.Pointer, error)
	destroyStream(s unsafe.Pointer, device int) error
	syncStream(s unsafe.Pointer, device int) error
	copyD2H(s unsafe.Pointer, device int, dst unsafe.Pointer, src uintptr, n uint64) error
	copyH2D(s unsafe.Pointer, device int, dst uintptr, src unsafe.Pointer, n uint64) error
	copyD2D(s unsafe.Pointer, device int, dst, src uintptr, n uint64) error
	ipcGet(ptr uintptr, device int) (IPCHandle, error)
	ipcOpen(h *IPCHandle, device int) (uintptr, error)
	ipcClose(ptr uintptr, device int) error
	dmabuf(ptr uintptr, size uint64, device int) (int, error)
	pciBusID(device int) (string, error)
	close() error
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
	streams map[int][]unsafe.Pointer // idle streams per device, for the synchronous copies

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
	return &Driver{vendor: vendor, lib: lib.name, log: log, b: b, streams: make(map[int][]unsafe.Pointer),
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

// PointerInfo is what the driver knows about an address.
type PointerInfo struct {
	// IsDevice is true for device memory; false for host memory, page-locked
	// or not.
	IsDevice bool
	// Device is the ordinal of the device that owns the memory; -1 for host
	// memory.
	Device int
	// AllocBase and AllocSize are the allocation that contains the address
	// (device memory only). Memory from a caching allocator (torch) reports
	// the allocator's whole segment.
	AllocBase uintptr
	AllocSize uint64
}

// PointerInfo asks the driver about ptr.
func (d *Driver) PointerInfo(ptr uintptr) (PointerInfo, error) {
	if err := d.enter(); err != nil {
		return PointerInfo{}, err
	}
	defer d.mu.RUnlock()
	return d.b.pointerInfo(ptr)
}

// CheckDeviceRange returns nil when all of [ptr, ptr+size) is device memory
// of device inside one allocation, and otherwise an error that says what is
// wrong, e.g. "gpu range 0x7f0000001000+4096 on device 1: belongs to device 0".
func (d *Driver) CheckDeviceRange(ptr uintptr, size uint64, device int) error {
	if err := d.enter(); err != nil {
		return err
	}
	defer d.mu.RUnlock()
	bad := func(format string, args ...any) error {
		return fmt.Errorf("gpu range %#x+%d on device %d: %s", ptr, size, device, fmt.Sprintf(format, args...))
	}
	switch {
	case ptr == 0:
		return bad("null pointer")
	case size == 0:
		return bad("empty range")
	case uint64(ptr)+size < uint64(ptr):
		return bad("range wraps around the address space")
	case device < 0 || device >= d.b.deviceCount():
		return bad("no such device (%d devices)", d.b.deviceCount())
	}
	info, err := d.b.pointerInfo(ptr)
	if err != nil {
		return bad("%v", err)
	}
	if !info.IsDevice {
		return bad("pointer is host memory")
	}
	if info.Device != device {
		return bad("belongs to device %d", info.Device)
	}
	end := uint64(ptr) + size
	allocEnd := uint64(info.AllocBase) + info.AllocSize
	if end <= allocEnd {
		return nil
	}
	last, err := d.b.pointerInfo(uintptr(end - 1))
	if err == nil && last.IsDevice && last.AllocBase != info.AllocBase {
		return bad("spans allocations (allocation %#x+%d ends before range end)", info.AllocBase, info.AllocSize)
	}
	return bad("extends past the end of allocation %#x+%d", info.AllocBase, info.AllocSize)
}

// getStream takes an idle stream of device from the pool, or makes one.
func (d *Driver) getStream(device int) (unsafe.Pointer, error) {
	d.poolMu.Lock()
	if ss := d.streams[device]; len(ss) > 0 {
		s := ss[len(ss)-1]
		d.streams[device] = ss[:len(ss)-1]
		d.poolMu.Unlock()
		return s, nil
	}
	d.poolMu.Unlock()
	s, err := d.b.newStream(device)
	if err != nil {
		return nil, err
	}
	d.log.Debug("gpu: created stream", "device", device)
	return s, nil
}

func (d *Driver) putStream(device int, s unsafe.Pointer) {
	d.poolMu.Lock()
	d.streams[device] = append(d.streams[device], s)
	d.poolMu.Unlock()
}

// syncCopy runs copy on a pooled stream of device and waits for it. A
// stream whose copy or wait failed is destroyed rather than reused.
func (d *Driver) syncCopy(device int, copy func(s unsafe.Pointer) error) error {
	if err := d.enter(); err != nil {
		return err
	}
	defer d.mu.RUnlock()
	s, err := d.getStream(device)
	if err != nil {
		return err
	}
	err = copy(s)
	if err == nil {
		err = d.b.syncStream(s, device)
	}
	if err != nil {
		_ = d.b.syncStream(s, device)
		_ = d.b.destroyStream(s, device)
		return err
	}
	d.putStream(device, s)
	return nil
}

// CopyToHost copies len(dst) bytes from device memory at src into dst and
// returns when they have arrived. It copies on a stream of the Driver's,
// not the default stream, so it does not wait for other work on the device.
// Callers check the range once, with CheckDeviceRange, when they register
// memory.
func (d *Driver) CopyToHost(dst []byte, src uintptr, device int) error {
	if len(dst) == 0 {
		return nil
	}
	// The DMA engine writes dst after the enqueueing call has returned;
	// keep it pinned until the stream has been synchronized.
	var pin runtime.Pinner
	pin.Pin(&dst[0])
	defer pin.Unpin()
	return d.syncCopy(device, func(s unsafe.Pointer) error {
		return d.b.copyD2H(s, device, unsafe.Pointer(&dst[0]), src, uint64(len(dst)))
	})
}

// CopyFromHost copies src into device memory at dst and returns when the
// copy is complete.
func (d *Driver) CopyFromHost(dst uintptr, src []byte, device int) error {
	if len(src) == 0 {
		return nil
	}
	var pin runtime.Pinner
	pin.Pin(&src[0])
	defer pin.Unpin()
	return d.syncCopy(device, func(s unsafe.Pointer) error {
		return d.b.copyH2D(s, device, dst, unsafe.Pointer(&src[0]), uint64(len(src)))
	})
}

// CopyDeviceToDevice copies n bytes between device allocations (the same
// device, or peers) on a stream of device and returns when it is complete.
func (d *Driver) CopyDeviceToDevice(dst, src uintptr, n uint64, device int) error {
	if n == 0 {
		return nil
	}
	return d.syncCopy(device, func(s unsafe.Pointer) error {
		return d.b.copyD2D(s, device, dst, src, n)
	})
}

// Copy is one device-to-device copy of a batch: Size bytes from Src to Dst.
//
// Copy, like Span, is an alias of an unnamed struct type rather than a
// defined type, so that a package declaring the same alias (core's
// DeviceCopy) names the very same type, and the Driver satisfies that
// package's interfaces without either package importing the other.
type Copy = struct {
	Dst, Src uintptr
	Size     uint64
}

// CopyDeviceBatch runs copies, in order, on one stream of device and
// returns when all are complete: one wait for the whole batch rather than
// one per copy. Each copy is between device allocations (of device, of its
// peers, or opened with IPCMap).
func (d *Driver) CopyDeviceBatch(device int, copies []Copy) error {
	if len(copies) == 0 {
		return nil
	}
	return d.syncCopy(device, func(s unsafe.Pointer) error {
		for i, c := range copies {
			if c.Size == 0 {
				continue
			}
			if err := d.b.copyD2D(s, device, c.Dst, c.Src, c.Size); err != nil {
				return fmt.Errorf("copy %d of %d (%#x to %#x, %d bytes): %w", i+1, len(copies), c.Src, c.Dst, c.Size, err)
			}
		}
		return nil
	})
}

// AllocPinned allocates n bytes of page-locked host memory, outside the Go
// heap, that the GPU can reach by DMA. free releases it; buf must not be
// used after free, and free may be called once.
func (d *Driver) AllocPinned(n int) (buf []byte, free func() error, err error) {
	if n <= 0 {
		return nil, nil, fmt.Errorf("gpu: AllocPinned(%d): size must be positive", n)
	}
	if err := d.enter(); err != nil {
		return nil, nil, err
	}
	defer d.mu.RUnlock()
	p, err := d.b.allocHost(n)
	if err != nil {
		return nil, nil, err
	}
	free = onceErr(func() error {
		if err := d.enter(); err != nil {
			return err
		}
		defer d.mu.RUnlock()
		return d.b.freeHost(p)
	})
	return unsafe.Slice((*byte)(p), n), free, nil
}

// AllocDevice allocates n bytes of device memory with cuMemAlloc or
// hipMalloc. It is a helper for tests and benchmarks: the engine transfers
// memory that the application (torch) allocated.
func (d *Driver) AllocDevice(n uint64, device int) (uintptr, error) {
	if n == 0 {
		return 0, fmt.Errorf("gpu: AllocDevice(0): size must be positive")
	}
	if err := d.enter(); err != nil {
		return 0, err
	}
	defer d.mu.RUnlock()
	return d.b.allocDevice(n, device)
}

// FreeDevice frees memory from AllocDevice. Like AllocDevice, it is a test
// helper.
func (d *Driver) FreeDevice(ptr uintptr) error {
	if err := d.enter(); err != nil {
		return err
	}
	defer d.mu.RUnlock()
	info, err := d.b.pointerInfo(ptr)
	if err != nil {
		return err
	}
	if !info.IsDevice || info.AllocBase != ptr {
		return fmt.Errorf("gpu: FreeDevice(%#x): not the start of a device allocation", ptr)
	}
	return d.b.freeDevice(ptr, info.Device)
}

// IPCHandle is a CUDA or HIP IPC memory handle: 64 opaque bytes that
// another process on the same node opens with IPCOpen or IPCMap. It is an
// alias of [64]byte, so that interfaces declared elsewhere with a plain
// [64]byte (core.GPUIPC) match the Driver's methods.
type IPCHandle = [64]byte

// IPCExport returns the IPC handle of the device allocation that contains
// ptr and the offset of ptr inside it. Handles always name the allocation
// base, because opening one maps the whole allocation and returns its base
// whatever pointer the handle was made from; the importer adds offset.
func (d *Driver) IPCExport(ptr uintptr) (h IPCHandle, offset uint64, err error) {
	if err := d.enter(); err != nil {
		return h, 0, err
	}
	defer d.mu.RUnlock()
	info, err := d.b.pointerInfo(ptr)
	if err != nil {
		return h, 0, err
	}
	if !info.IsDevice {
		return h, 0, fmt.Errorf("gpu: IPCExport(%#x): pointer is host memory", ptr)
	}
	h, err = d.b.ipcGet(info.AllocBase, info.Device)
	if err != nil {
		return h, 0, err
	}
	return h, uint64(ptr - info.AllocBase), nil
}

// IPCOpen maps an allocation exported by another process (IPCExport) into
// this one, on device, and returns the address of offset inside it. close
// unmaps it; it may be called once. CUDA and HIP refuse to open a handle in
// the process that exported it.
func (d *Driver) IPCOpen(h IPCHandle, offset uint64, device int) (ptr uintptr, close func() error, err error) {
	if err := d.enter(); err != nil {
		return 0, nil, err
	}
	defer d.mu.RUnlock()
	base, err := d.b.ipcOpen(&h, device)
	if err != nil {
		return 0, nil, err
	}
	unmap := func() error { return d.b.ipcClose(base, device) }
	if info, err := d.b.pointerInfo(base); err == nil && info.IsDevice && offset >= info.AllocSize {
		_ = unmap()
		return 0, nil, fmt.Errorf("gpu: IPCOpen: offset %d is outside the %d-byte allocation", offset, info.AllocSize)
	}
	close = onceErr(func() error {
		if err := d.enter(); err != nil {
			return err
		}
		defer d.mu.RUnlock()
		return unmap()
	})
	return base + uintptr(offset), close, nil
}

// IPCMap maps the whole allocation that h names (IPCExport's handle) on
// device, and returns its base address and size in this process; callers
// add the exporter's offset and keep their accesses inside [base,
// base+size). unmap releases the mapping; it may be called once. CUDA and
// HIP refuse to open a handle in the process that exported it, and refuse
// to open one handle twice in one process: callers share one mapping per
// handle and device.
func (d *Driver) IPCMap(h IPCHandle, device int) (base uintptr, size uint64, unmap func() error, err error) {
	if err := d.enter(); err != nil {
		return 0, 0, nil, err
	}
	defer d.mu.RUnlock()
	base, err = d.b.ipcOpen(&h, device)
	if err != nil {
		return 0, 0, nil, err
	}
	release := func() error { return d.b.ipcClose(base, device) }
	info, err := d.b.pointerInfo(base)
	switch {
	case err != nil:
		_ = release()
		return 0, 0, nil, fmt.Errorf("gpu: IPCMap: size of the mapped allocation: %w", err)
	case !info.IsDevice || base < info.AllocBase || uint64(base-info.AllocBase) >= info.AllocSize:
		_ = release()
		return 0, 0, nil, fmt.Errorf("gpu: IPCMap: the driver does not report the mapping at %#x as device memory", base)
	}
	// The mapping starts at the allocation base (IPCExport exports bases);
	// should a driver report a larger range around it, only what lies from
	// base on is usable.
	size = info.AllocSize - uint64(base-info.AllocBase)
	unmap = onceErr(func() error {
		if err := d.enter(); err != nil {
			return err
		}
		defer d.mu.RUnlock()
		return release()
	})
	return base, size, unmap, nil
}

// DmabufFD exports the device memory [ptr, ptr+size) as a dma-buf for
// GPUDirect RDMA: register it with ibv_reg_dmabuf_mr(pd, offset, size,
// iova=ptr, fd, access). The exported range is [ptr, ptr+size) widened to
// whole host pages, and offset is where ptr lies in it. The caller owns fd
// and closes it (the MR keeps its own reference). The error wraps
// ErrNotSupported when the driver or device cannot export dma-bufs, in which
// case callers fall back to ibv_reg_mr with nvidia-peermem/amdgpu peer
// memory, or to staging.
func (d *Driver) DmabufFD(ptr uintptr, size uint64) (fd int, offset uint64, err error) {
	if err := d.enter(); err != nil {
		return -1, 0, err
	}
	defer d.mu.RUnlock()
	info, err := d.b.pointerInfo(ptr)
	if err != nil {
		return -1, 0, err
	}
	if !info.IsDevice {
		return -1, 0, fmt.Errorf("gpu: DmabufFD(%#x): pointer is host memory", ptr)
	}
	if size == 0 || uint64(ptr)+size < uint64(ptr) {
		return -1, 0, fmt.Errorf("gpu: DmabufFD(%#x, %d): bad size", ptr, size)
	}
	page := uint64(os.Getpagesize())
	start := uint64(ptr) &^ (page - 1)
	end := (uint64(ptr) + size + page - 1) &^ (page - 1)
	fd, err = d.b.dmabuf(uintptr(start), end-start, info.Device)
	if err != nil {
		return -1, 0, err
	}
	return fd, uint64(ptr) - start, nil
}

// PCIBusID returns the PCI address of device as the driver prints it
// ("0000:3B:00.0"), for choosing the NIC nearest the GPU. The error wraps
// ErrNotSupported when the driver lacks the call.
func (d *Driver) PCIBusID(device int) (string, error) {
	if err := d.enter(); err != nil {
		return "", err
	}
	defer d.mu.RUnlock()
	return d.b.pciBusID(device)
}

// ExportDmabuf is DmabufFD for callers that also know the device the
// memory belongs to (the RDMA backend's DmabufExporter): it fails when the
// memory is not on device.
func (d *Driver) ExportDmabuf(ptr uintptr, size uint64, device int) (fd int, offset uint64, err error) {
	info, err := d.PointerInfo(ptr)
	if err != nil {
		return -1, 0, err
	}
	if info.IsDevice && info.Device != device {
		return -1, 0, fmt.Errorf("gpu: ExportDmabuf(%#x): memory of device %d, not %d", ptr, info.Device, device)
	}
	return d.DmabufFD(ptr, size)
}

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
	return errors.Join(errs...)
}

// driverError is a failed driver call.
type driverError struct {
	op   string
	code int // CUresult or hipError_t; -1 when the symbol is missing
	msg  string
}

// codeNotSupported is CUDA_ERROR_NOT_SUPPORTED and hipErrorNotSupported.
const codeNotSupported = 801

func (e *driverError) Error() string {
	if e.code < 0 {
		return fmt.Sprintf("gpu: %s: %s", e.op, e.msg)
	}
	return fmt.Sprintf("gpu: %s: %s (error %d)", e.op, e.msg, e.code)
}

// Is makes errors.Is(err, ErrNotSupported) true for a missing symbol or a
// driver's "not supported" code.
func (e *driverError) Is(target error) bool {
	return target == ErrNotSupported && (e.code < 0 || e.code == codeNotSupported)
}

func missingSymbol(op string) error {
	return &driverError{op: op, code: -1, msg: "the driver does not have this function"}
}

func errNoDevice(device, n int) error {
	return fmt.Errorf("gpu: no device %d (%d devices)", device, n)
}

// onceErr returns a function that runs f the first time and reports an
// error on later calls.
func onceErr(f func() error) func() error {
	var mu sync.Mutex
	done := false
	return func() error {
		mu.Lock()
		defer mu.Unlock()
		if done {
			return errors.New("gpu: already released")
		}
		done = true
		return f()
	}
}
