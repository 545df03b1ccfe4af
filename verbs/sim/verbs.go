package sim

import (
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/mori-go/mori-go/core"
	"github.com/mori-go/mori-go/verbs"
)

// gidTableLen is the size of every simulated port's GID table; entries past
// the device's GIDs are empty, as on real ports.
const gidTableLen = 16

type context struct {
	d     *Device
	async chan verbs.AsyncEvent
	dead  atomic.Bool // the device failed (Fabric.FailDevice)
}

func (c *context) raise(ev verbs.AsyncEvent) {
	select {
	case c.async <- ev:
	default: // a consumer that never reads loses events, as with a full queue
	}
}

func (c *context) Name() string { return c.d.spec.Name }

func (c *context) QueryDevice() (verbs.DeviceAttr, error) {
	return verbs.DeviceAttr{PhysPortCnt: 1, MaxQPWR: c.d.spec.MaxQPWR, MaxSGE: 30, MaxCQE: 1 << 22, MaxQPRdAtom: c.d.spec.ReadDepth, MaxQPInitRdAtom: c.d.spec.ReadDepth}, nil
}

func (c *context) QueryPort(port uint8) (verbs.PortAttr, error) {
	if port != 1 {
		return verbs.PortAttr{}, fmt.Errorf("sim %s: query port %d: %w", c.d.spec.Name, port, syscall.EINVAL)
	}
	if err := c.fatal("query port"); err != nil {
		return verbs.PortAttr{}, err
	}
	c.d.mu.Lock()
	state := c.d.state
	c.d.mu.Unlock()
	return verbs.PortAttr{
		State: state, MaxMTU: verbs.MTU4096, ActiveMTU: c.d.spec.MTU, GIDTableLen: gidTableLen,
		MaxMsgSize: c.d.spec.MaxMsg, LID: c.d.lid, LinkLayer: c.d.spec.Link,
	}, nil
}

func (c *context) QueryGID(port uint8, index int) (verbs.GIDEntry, error) {
	if port != 1 || index < 0 || index >= gidTableLen {
		return verbs.GIDEntry{}, fmt.Errorf("sim %s: query gid port %d index %d: %w", c.d.spec.Name, port, index, syscall.EINVAL)
	}
	if err := c.fatal("query gid"); err != nil {
		return verbs.GIDEntry{}, err
	}
	return c.d.gid(index), nil
}

func (c *context) AllocPD() (verbs.PD, error) {
	if err := c.fatal("alloc pd"); err != nil {
		return nil, err
	}
	return &pd{ctx: c, mrs: make(map[uint32]*mr)}, nil
}

func (c *context) CreateCompChannel() (verbs.CompChannel, error) {
	return &channel{events: make(chan verbs.CQ, 4096)}, nil
}

// CompVectors reports the NIC's completion vectors (NIC.CompVectors,
// default 8).
func (c *context) CompVectors() int { return c.d.spec.CompVectors }

func (c *context) CreateCQ(cqe int, ch verbs.CompChannel, vector int) (verbs.CQ, error) {
	if vector < 0 || vector >= c.d.spec.CompVectors {
		return nil, fmt.Errorf("sim %s: create cq on completion vector %d of %d: %w", c.d.spec.Name, vector, c.d.spec.CompVectors, syscall.EINVAL)
	}
	if cqe <= 0 || cqe > 1<<22 {
		return nil, fmt.Errorf("sim %s: create cq of %d entries: %w", c.d.spec.Name, cqe, syscall.EINVAL)
	}
	if err := c.fatal("create cq"); err != nil {
		return nil, err
	}
	f := c.d.f
	f.mu.Lock()
	if f.cqCap > 0 {
		cqe = min(cqe, f.cqCap)
	}
	f.mu.Unlock()
	q := &cq{ctx: c, cap: cqe, vector: vector, qps: make(map[*qp]bool)}
	if ch != nil {
		q.ch = ch.(*channel)
	}
	return q, nil
}

func (c *context) WaitAsyncEvent(timeout time.Duration) (verbs.AsyncEvent, bool, error) {
	t := time.NewTimer(timeout)
	defer t.Stop()
	select {
	case ev := <-c.async:
		return ev, true, nil
	case <-t.C:
		return verbs.AsyncEvent{}, false, nil
	}
}

func (c *context) Close() error {
	c.d.mu.Lock()
	delete(c.d.ctxs, c)
	c.d.mu.Unlock()
	return nil
}

type pd struct {
	ctx *context
	mu  sync.Mutex
	mrs map[uint32]*mr
	qps int
}

type mr struct {
	pd     *pd
	key    uint32
	iova   uint64
	length uint64
	access verbs.Access
	mem    []byte
	mapped []byte // dma-buf mapping to unmap
}

// memory returns the host memory at addr: the registered memory of the
// process, which the simulator reads and writes as the NIC would.
func memory(addr uintptr, n uint64) []byte {
	return unsafe.Slice((*byte)(core.PointerOf(addr)), n)
}

func (p *pd) RegMR(addr uintptr, length uint64, access verbs.Access) (verbs.MR, error) {
	if addr == 0 || length == 0 {
		return nil, fmt.Errorf("sim: reg mr %#x len %d: %w", addr, length, syscall.EINVAL)
	}
	if err := p.ctx.fatal("reg mr"); err != nil {
		return nil, err
	}
	if f := p.ctx.d.f; !f.cfg.PeerMemory && f.isDeviceMemory(addr, length) {
		return nil, fmt.Errorf("sim: reg mr %#x len %d (GPU memory, no peer-memory module): %w", addr, length, syscall.EFAULT)
	}
	m := &mr{pd: p, key: p.ctx.d.f.newKey(), iova: uint64(addr), length: length, access: access, mem: memory(addr, length)}
	p.mu.Lock()
	p.mrs[m.key] = m
	p.mu.Unlock()
	return m, nil
}

func (p *pd) RegDmabufMR(offset, length, iova uint64, fd int, access verbs.Access) (verbs.MR, error) {
	if p.ctx.d.f.cfg.NoDmabuf {
		return nil, fmt.Errorf("sim: ibv_reg_dmabuf_mr: %w", syscall.EOPNOTSUPP)
	}
	if length == 0 || iova%uint64(unix.Getpagesize()) != offset%uint64(unix.Getpagesize()) {
		return nil, fmt.Errorf("sim: reg dmabuf mr offset %d len %d iova %#x: %w", offset, length, iova, syscall.EINVAL)
	}
	page := uint64(unix.Getpagesize())
	skip := offset % page
	data, err := unix.Mmap(fd, int64(offset-skip), int(length+skip), unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
	if err != nil {
		return nil, fmt.Errorf("sim: map dma-buf fd %d: %w", fd, err)
	}
	m := &mr{pd: p, key: p.ctx.d.f.newKey(), iova: iova, length: length, access: access, mem: data[skip:], mapped: data}
	p.mu.Lock()
	p.mrs[m.key] = m
	p.mu.Unlock()
	return m, nil
}

func (p *pd) lookup(key uint32) *mr {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.mrs[key]
}

func (p *pd) CreateQP(a verbs.QPInitAttr) (verbs.QP, error) {
	if err := p.ctx.fatal("create qp"); err != nil {
		return nil, err
	}
	return newQP(p, a)
}

func (p *pd) Close() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if len(p.mrs) > 0 || p.qps > 0 {
		return fmt.Errorf("sim: dealloc pd with %d MRs and %d QPs: %w", len(p.mrs), p.qps, syscall.EBUSY)
	}
	return nil
}

func (m *mr) LKey() uint32 { return m.key }
func (m *mr) RKey() uint32 { return m.key }

func (m *mr) Close() error {
	f := m.pd.ctx.d.f
	f.dma.Lock() // waits for work requests touching memory
	m.pd.mu.Lock()
	_, ok := m.pd.mrs[m.key]
	delete(m.pd.mrs, m.key)
	m.pd.mu.Unlock()
	f.dma.Unlock()
	if !ok {
		return fmt.Errorf("sim: dereg mr %#x twice: %w", m.key, syscall.EINVAL)
	}
	if m.mapped != nil {
		return unix.Munmap(m.mapped)
	}
	return nil
}

// slice returns the registered memory [addr, addr+n) if the MR covers it.
func (m *mr) slice(addr uint64, n uint64) ([]byte, bool) {
	if addr < m.iova || n > m.length || addr-m.iova > m.length-n {
		return nil, false
	}
	off := addr - m.iova
	return m.mem[off : off+n], true
}

type cq struct {
	ctx     *context
	ch      *channel
	mu      sync.Mutex
	cap     int
	vector  int
	q       []verbs.WorkCompletion
	armed   bool
	overrun bool
	qps     map[*qp]bool
}

var errOverrun = errors.New("sim: completion queue overrun")

func (c *cq) push(wc verbs.WorkCompletion) {
	c.mu.Lock()
	if c.overrun {
		c.mu.Unlock()
		return
	}
	if len(c.q) >= c.cap {
		c.overrun = true
		var qps []*qp
		for q := range c.qps {
			qps = append(qps, q)
		}
		c.mu.Unlock()
		c.ctx.raise(verbs.AsyncEvent{Type: verbs.EventCQErr, CQ: c})
		for _, q := range qps {
			q.toError()
		}
		return
	}
	c.q = append(c.q, wc)
	notify := c.armed && c.ch != nil
	c.armed = false
	c.mu.Unlock()
	if notify {
		c.ch.notify(c)
	}
}

func (c *cq) Poll(wc []verbs.WorkCompletion) (int, error) {
	frozen := c.ctx.d.f.isFrozen()
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.overrun {
		return 0, errOverrun
	}
	if frozen {
		return 0, nil
	}
	n := copy(wc, c.q)
	c.q = c.q[n:]
	if len(c.q) == 0 {
		c.q = nil
	}
	return n, nil
}

func (c *cq) ReqNotify(bool) error {
	c.mu.Lock()
	c.armed = true
	c.mu.Unlock()
	return nil
}

func (c *cq) Close() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.qps) > 0 {
		return fmt.Errorf("sim: destroy cq used by %d QPs: %w", len(c.qps), syscall.EBUSY)
	}
	return nil
}

type channel struct {
	events chan verbs.CQ
}

func (h *channel) notify(c *cq) {
	select {
	case h.events <- c:
	default:
	}
}

func (h *channel) Wait(timeout time.Duration) (verbs.CQ, error) {
	t := time.NewTimer(timeout)
	defer t.Stop()
	select {
	case c := <-h.events:
		return c, nil
	case <-t.C:
		return nil, nil
	}
}

func (h *channel) Close() error { return nil }
