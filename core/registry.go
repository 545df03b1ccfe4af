package core

import (
	"fmt"
	"sort"
	"sync"
	"sync/atomic"
	"unsafe"
)

// Region is one registered memory range of the local engine.
//
// Backends touch a region's memory only between Use and Release. Close
// waits until every such use has ended and refuses new ones, so that once
// deregistration returns, no write lands in the memory any more.
type Region struct {
	ID       uint32
	Addr     uintptr
	Size     uint64
	Location MemoryLocation
	Device   int
	// Host reports that the CPU can address the memory directly: CPU
	// memory, and GPU memory when no GPU driver is in the process.
	Host bool
	// Attachments is the backends' state of the region (see
	// AttachmentKey).
	Attachments Attachments
	// ElemSize is the element size the caller gave at registration
	// (RegionOptions.ElemSize): 0 leaves the data plane's default.
	ElemSize int

	token  Token // the capability peers present (Registry.Resolve)
	mu     sync.Mutex
	cond   *sync.Cond
	users  int
	closed bool
}

// NewRegion returns an open region. Registries call it; tests may too.
func NewRegion(id uint32, addr uintptr, size uint64, loc MemoryLocation, device int, host bool) *Region {
	r := &Region{ID: id, Addr: addr, Size: size, Location: loc, Device: device, Host: host}
	r.cond = sync.NewCond(&r.mu)
	return r
}

// CheckRange validates [off, off+size) against the region, refusing
// overflow. The error names the region and the offending numbers.
func (r *Region) CheckRange(off, size uint64) error {
	if size == 0 {
		return Errorf(ErrInvalidArgs, "memory %d: zero-length range at offset %d", r.ID, off)
	}
	end := off + size
	if end < off || end > r.Size {
		return Errorf(ErrInvalidArgs, "memory %d: range offset %d size %d exceeds its %d bytes", r.ID, off, size, r.Size)
	}
	return nil
}

// Use marks the start of an access to the memory. It fails once the region
// is closed.
func (r *Region) Use() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed {
		return Errorf(ErrNotFound, "memory %d was deregistered", r.ID)
	}
	r.users++
	return nil
}

// Release ends an access begun by Use.
func (r *Region) Release() {
	r.mu.Lock()
	r.users--
	if r.users == 0 {
		r.cond.Broadcast()
	}
	r.mu.Unlock()
}

// Close refuses new uses and waits until the current ones end.
func (r *Region) Close() {
	r.mu.Lock()
	r.closed = true
	for r.users > 0 {
		r.cond.Wait()
	}
	r.mu.Unlock()
}

// Bytes returns the host-addressable memory [off, off+size). The caller has
// checked the range and holds a Use. It panics on non-host memory.
func (r *Region) Bytes(off, size uint64) []byte {
	if !r.Host {
		panic(fmt.Sprintf("memory %d is not host-addressable", r.ID))
	}
	return unsafe.Slice((*byte)(unsafe.Add(PointerOf(r.Addr), off)), size)
}

// PointerOf turns the address of memory outside the Go heap (C or GPU
// memory handed to the engine as an integer) into an unsafe.Pointer.
func PointerOf(addr uintptr) unsafe.Pointer {
	return *(*unsafe.Pointer)(unsafe.Pointer(&addr))
}

// Registry holds the local engine's registered regions, with no two
// overlapping.
type Registry struct {
	mu     sync.RWMutex
	byID   map[uint32]*Region
	sorted []*Region // by Addr
	nextID uint32
	denied atomic.Uint64 // accesses refused for a wrong token
}

// NewRegistry returns an empty registry.
func NewRegistry() *Registry {
	return &Registry{byID: make(map[uint32]*Region), nextID: 1}
}

// MaxElemSize is the largest element size a registration or a transfer
// may name.
const MaxElemSize = 16

// RegionOptions are the settings of a registration besides its memory.
type RegionOptions struct {
	// ElemSize is the size in bytes of the elements the memory holds (2
	// for bf16 or fp16 K/V), for a data plane that shuffles the bytes of
	// elements into planes before compressing a write from it: 0 leaves
	// the data plane's default, 1 means no shuffle, at most MaxElemSize.
	ElemSize int
}

// CheckElemSize refuses an element size outside 0..MaxElemSize.
func CheckElemSize(n int) error {
	if n < 0 || n > MaxElemSize {
		return Errorf(ErrInvalidArgs, "element size %d: want 0 (default), 1 (no shuffle) up to %d", n, MaxElemSize)
	}
	return nil
}

// Add registers [addr, addr+size) with no options (AddWith).
func (g *Registry) Add(addr uintptr, size uint64, loc MemoryLocation, device int, host bool) (*Region, error) {
	return g.AddWith(addr, size, loc, device, host, RegionOptions{})
}

// AddWith registers [addr, addr+size) with opts. It refuses null pointers,
// empty or wrapping ranges, overlap with a registered region and options
// out of bounds.
func (g *Registry) AddWith(addr uintptr, size uint64, loc MemoryLocation, device int, host bool, opts RegionOptions) (*Region, error) {
	if err := CheckElemSize(opts.ElemSize); err != nil {
		return nil, fmt.Errorf("register memory %#x len %d: %w", addr, size, err)
	}
	if addr == 0 {
		return nil, Errorf(ErrInvalidArgs, "register memory 0x0 len %d: null pointer", size)
	}
	if size == 0 {
		return nil, Errorf(ErrInvalidArgs, "register memory %#x len 0: empty range", addr)
	}
	if uint64(addr)+size < uint64(addr) {
		return nil, Errorf(ErrInvalidArgs, "register memory %#x len %d: range wraps the address space", addr, size)
	}
	if loc != LocationCPU && loc != LocationGPU {
		return nil, Errorf(ErrInvalidArgs, "register memory %#x len %d: unknown location %d", addr, size, loc)
	}
	tok, err := NewToken()
	if err != nil {
		return nil, err
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	i := sort.Search(len(g.sorted), func(i int) bool { return g.sorted[i].Addr >= addr })
	end := uint64(addr) + size
	if i < len(g.sorted) && uint64(g.sorted[i].Addr) < end {
		o := g.sorted[i]
		return nil, Errorf(ErrInvalidArgs, "register memory %#x len %d: overlaps region %d (%#x len %d)", addr, size, o.ID, o.Addr, o.Size)
	}
	if i > 0 {
		o := g.sorted[i-1]
		if uint64(o.Addr)+o.Size > uint64(addr) {
			return nil, Errorf(ErrInvalidArgs, "register memory %#x len %d: overlaps region %d (%#x len %d)", addr, size, o.ID, o.Addr, o.Size)
		}
	}
	for g.byID[g.nextID] != nil || g.nextID == 0 {
		g.nextID++
	}
	r := NewRegion(g.nextID, addr, size, loc, device, host)
	r.token = tok
	r.ElemSize = opts.ElemSize
	g.nextID++
	g.byID[r.ID] = r
	g.sorted = append(g.sorted, nil)
	copy(g.sorted[i+1:], g.sorted[i:])
	g.sorted[i] = r
	return r, nil
}

// Token returns the region's access token, for the descriptor the
// application hands to its peers. Nothing else may carry it.
func (r *Region) Token() Token { return r.token }

// Get returns the region with the given id, checking no token: for the
// engine's own use (its local side of a transfer, deregistration). Whatever
// a peer names goes through Resolve.
func (g *Registry) Get(id uint32) (*Region, error) {
	g.mu.RLock()
	r := g.byID[id]
	g.mu.RUnlock()
	if r == nil {
		return nil, Errorf(ErrNotFound, "memory %d is not registered", id)
	}
	return r, nil
}

// Remove unregisters a region and waits for its current uses to end.
func (g *Registry) Remove(id uint32) (*Region, error) {
	g.mu.Lock()
	r := g.byID[id]
	if r == nil {
		g.mu.Unlock()
		return nil, Errorf(ErrNotFound, "deregister memory %d: not registered", id)
	}
	delete(g.byID, id)
	i := sort.Search(len(g.sorted), func(i int) bool { return g.sorted[i].Addr >= r.Addr })
	g.sorted = append(g.sorted[:i], g.sorted[i+1:]...)
	g.mu.Unlock()
	r.Close()
	return r, nil
}

// Len returns the number of registered regions.
func (g *Registry) Len() int {
	g.mu.RLock()
	defer g.mu.RUnlock()
	return len(g.byID)
}

// Each calls f for every registered region, in address order.
func (g *Registry) Each(f func(*Region)) {
	g.mu.RLock()
	rs := append([]*Region(nil), g.sorted...)
	g.mu.RUnlock()
	for _, r := range rs {
		f(r)
	}
}
