package sim

import (
	"fmt"
	"sync"
	"time"

	"github.com/mori-go/mori-go/verbs"
)

// Config tunes a fabric. Zero fields take the defaults.
type Config struct {
	// RetryInterval is how long a lost packet waits before it is sent
	// again (default 1 ms).
	RetryInterval time.Duration
	// RNRInterval is how long a SEND waits for the receiver to post a
	// receive before trying again (default 100 µs).
	RNRInterval time.Duration
	// PeerMemory: a peer-memory module (nvidia-peermem, amdgpu) is
	// loaded, so ibv_reg_mr accepts GPU memory (see AddDeviceMemory).
	// Without it, registering GPU memory by address fails with EFAULT, as
	// get_user_pages does on device addresses.
	PeerMemory bool
	// NoDmabuf: ibv_reg_dmabuf_mr is unsupported (rdma-core before 34, or
	// a kernel or provider without dma-buf), failing with EOPNOTSUPP.
	NoDmabuf bool
	// TimerGranularity rounds the timers made by Fabric.NewTimer up to a
	// multiple of itself: Go's runtime wakes a short timer of an otherwise
	// idle process late (a 16 µs timer took 0.88 ms on the machine this was
	// written on), and a poller that sleeps while work is outstanding pays
	// that on every transfer. Tests set it large so that such a sleep
	// cannot go unnoticed.
	TimerGranularity time.Duration
}

// NIC describes a simulated device with one port.
type NIC struct {
	Name      string
	Link      verbs.LinkLayer // default Ethernet (RoCE v2)
	PCIAddr   string
	MTU       verbs.MTU // active MTU, default 4096
	MaxQPWR   int       // default 32768
	MaxMsg    uint32    // max_msg_sz, default 1 GiB
	PortDown  bool      // the port starts DOWN
	NoIPv4GID bool      // RoCE: only link-local GIDs
	// CompVectors is the number of completion vectors (default 8).
	CompVectors int
	// ReadDepth is max_qp_rd_atom and max_qp_init_rd_atom: the RDMA READs
	// a QP serves as responder, and issues as requester, at once (default
	// 16). A requester whose max_rd_atomic exceeds its responder's
	// max_dest_rd_atomic has its READs refused (IBV_WC_REM_INV_REQ_ERR).
	ReadDepth int
}

// Fabric is a simulated RDMA network. Tests create one and hand its hosts
// to the engines' factories; nothing is shared between fabrics.
type Fabric struct {
	cfg Config

	mu      sync.Mutex
	hosts   map[string]*Host
	byGID   map[verbs.GID]*Device
	byLID   map[uint16]*Device
	nextQPN uint32
	nextKey uint32
	nextLID uint16
	nextDev int
	lost    map[*Device]int
	cut     map[[2]*Device]bool
	latency time.Duration
	cqCap   int
	frozen  bool
	count   counters
	device  [][2]uintptr // GPU memory ranges [start, end)

	// dma is held for reading while a work request touches memory and for
	// writing while an MR is deregistered, so that once ibv_dereg_mr
	// returns nothing touches the memory.
	dma sync.RWMutex
}

// NewFabric returns an empty fabric.
func NewFabric(cfg Config) *Fabric {
	if cfg.RetryInterval <= 0 {
		cfg.RetryInterval = time.Millisecond
	}
	if cfg.RNRInterval <= 0 {
		cfg.RNRInterval = 100 * time.Microsecond
	}
	return &Fabric{
		cfg: cfg, hosts: make(map[string]*Host), byGID: make(map[verbs.GID]*Device),
		byLID: make(map[uint16]*Device), nextQPN: 0x100, nextKey: 0x1000, nextLID: 1,
		lost: make(map[*Device]int), cut: make(map[[2]*Device]bool),
	}
}

// Host is one machine of the fabric; it implements verbs.Provider.
type Host struct {
	f       *Fabric
	name    string
	devices []*Device
}

var _ verbs.Provider = (*Host)(nil)

// Device is a simulated NIC (one port).
type Device struct {
	f     *Fabric
	host  *Host
	spec  NIC
	lid   uint16
	gids  []verbs.GIDEntry
	mu    sync.Mutex
	state verbs.PortState
	ctxs  map[*context]bool
	qps   map[uint32]*qp
}

// AddHost adds a machine with the given NICs.
func (f *Fabric) AddHost(name string, nics ...NIC) *Host {
	f.mu.Lock()
	defer f.mu.Unlock()
	h := &Host{f: f, name: name}
	for _, spec := range nics {
		if spec.Link == verbs.LinkUnspecified {
			spec.Link = verbs.LinkEthernet
		}
		if spec.MTU == 0 {
			spec.MTU = verbs.MTU4096
		}
		if spec.MaxQPWR == 0 {
			spec.MaxQPWR = 32768
		}
		if spec.MaxMsg == 0 {
			spec.MaxMsg = 1 << 30
		}
		if spec.CompVectors == 0 {
			spec.CompVectors = 8
		}
		if spec.ReadDepth == 0 {
			spec.ReadDepth = 16
		}
		f.nextDev++
		d := &Device{f: f, host: h, spec: spec, state: verbs.PortActive, ctxs: make(map[*context]bool), qps: make(map[uint32]*qp)}
		if spec.PortDown {
			d.state = verbs.PortDown
		}
		n := f.nextDev
		ll := verbs.GID{0xfe, 0x80, 10: byte(n >> 8), 11: byte(n), 15: 1}
		if spec.Link == verbs.LinkInfiniBand {
			d.lid = f.nextLID
			f.nextLID++
			d.gids = []verbs.GIDEntry{{Index: 0, GID: ll, Type: verbs.GIDTypeIB}}
			f.byLID[d.lid] = d
		} else {
			v4 := verbs.GID{10: 0xff, 11: 0xff, 12: 10, 13: 0, 14: byte(n >> 8), 15: byte(n)}
			d.gids = []verbs.GIDEntry{
				{Index: 0, GID: ll, Type: verbs.GIDTypeRoCEv1},
				{Index: 1, GID: ll, Type: verbs.GIDTypeRoCEv2},
			}
			if !spec.NoIPv4GID {
				d.gids = append(d.gids,
					verbs.GIDEntry{Index: 2, GID: v4, Type: verbs.GIDTypeRoCEv1},
					verbs.GIDEntry{Index: 3, GID: v4, Type: verbs.GIDTypeRoCEv2})
				f.byGID[v4] = d
			}
		}
		f.byGID[ll] = d
		h.devices = append(h.devices, d)
	}
	f.hosts[name] = h
	return h
}

// Device returns the host's NIC with the given name, or nil.
func (h *Host) Device(name string) *Device {
	for _, d := range h.devices {
		if d.spec.Name == name {
			return d
		}
	}
	return nil
}

// Devices lists the host's NICs (verbs.Provider).
func (h *Host) Devices() ([]verbs.DeviceInfo, error) {
	out := make([]verbs.DeviceInfo, len(h.devices))
	for i, d := range h.devices {
		out[i] = verbs.DeviceInfo{Name: d.spec.Name, PCIAddr: d.spec.PCIAddr}
	}
	return out, nil
}

// Open opens a NIC (verbs.Provider).
func (h *Host) Open(name string) (verbs.Context, error) {
	d := h.Device(name)
	if d == nil {
		return nil, fmt.Errorf("sim: host %s has no device %s", h.name, name)
	}
	c := &context{d: d, async: make(chan verbs.AsyncEvent, 256)}
	d.mu.Lock()
	d.ctxs[c] = true
	d.mu.Unlock()
	return c, nil
}

// LosePackets makes the next n packets sent by d vanish (0 stops it); each
// lost packet costs a retransmission, and a work request that loses more
// than its QP's retry count fails with IBV_WC_RETRY_EXC_ERR.
func (f *Fabric) LosePackets(d *Device, n int) {
	f.mu.Lock()
	f.lost[d] = n
	f.mu.Unlock()
}

// FreezeCQs makes polling find nothing, as a consumer too slow to poll
// would, until ThawCQs: completions pile up and CQs smaller than the work
// in flight overflow.
func (f *Fabric) FreezeCQs() {
	f.mu.Lock()
	f.frozen = true
	f.mu.Unlock()
}

// ThawCQs undoes FreezeCQs.
func (f *Fabric) ThawCQs() {
	f.mu.Lock()
	f.frozen = false
	f.mu.Unlock()
}

func (f *Fabric) isFrozen() bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.frozen
}

// Partition drops every packet between a and b until Heal.
func (f *Fabric) Partition(a, b *Device) {
	f.mu.Lock()
	f.cut[[2]*Device{a, b}] = true
	f.cut[[2]*Device{b, a}] = true
	f.mu.Unlock()
}

// Heal undoes Partition.
func (f *Fabric) Heal(a, b *Device) {
	f.mu.Lock()
	delete(f.cut, [2]*Device{a, b})
	delete(f.cut, [2]*Device{b, a})
	f.mu.Unlock()
}

// SetLatency delays every work request by d.
func (f *Fabric) SetLatency(d time.Duration) {
	f.mu.Lock()
	f.latency = d
	f.mu.Unlock()
}

// CapCQs makes every CQ created afterwards hold at most n entries, whatever
// size was asked for (0 removes the cap); a consumer that relies on the
// requested size then overflows its CQs.
func (f *Fabric) CapCQs(n int) {
	f.mu.Lock()
	f.cqCap = n
	f.mu.Unlock()
}

// SetPortState changes d's port state and raises IBV_EVENT_PORT_ERR or
// IBV_EVENT_PORT_ACTIVE. Packets from or to a port that is not active are
// lost.
func (f *Fabric) SetPortState(d *Device, s verbs.PortState) {
	d.mu.Lock()
	d.state = s
	ctxs := d.contexts()
	d.mu.Unlock()
	ev := verbs.AsyncEvent{Type: verbs.EventPortErr, Port: 1}
	if s == verbs.PortActive {
		ev.Type = verbs.EventPortActive
	}
	for _, c := range ctxs {
		c.raise(ev)
	}
}

// FailQP moves the QP with number qpn on d to the error state, as a fatal
// NIC error would, and raises IBV_EVENT_QP_FATAL. It reports whether the QP
// exists.
func (f *Fabric) FailQP(d *Device, qpn uint32) bool {
	d.mu.Lock()
	q := d.qps[qpn]
	d.mu.Unlock()
	if q == nil {
		return false
	}
	q.toError()
	q.ctx.raise(verbs.AsyncEvent{Type: verbs.EventQPFatal, QPNum: qpn})
	return true
}

// NewTimer returns a timer for d rounded up to Config.TimerGranularity:
// the timers of a poller running on this fabric.
func (f *Fabric) NewTimer(d time.Duration) *time.Timer {
	if g := f.cfg.TimerGranularity; g > 0 {
		d = (d + g - 1) / g * g
	}
	return time.NewTimer(d)
}

// AddDeviceMemory marks [addr, addr+size) as GPU memory: ibv_reg_mr of
// any part of it fails unless Config.PeerMemory.
func (f *Fabric) AddDeviceMemory(addr uintptr, size uint64) {
	f.mu.Lock()
	f.device = append(f.device, [2]uintptr{addr, addr + uintptr(size)})
	f.mu.Unlock()
}

// isDeviceMemory reports whether [addr, addr+size) touches GPU memory.
func (f *Fabric) isDeviceMemory(addr uintptr, size uint64) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, r := range f.device {
		if addr < r[1] && addr+uintptr(size) > r[0] {
			return true
		}
	}
	return false
}

// QPNums lists the numbers of d's QPs.
func (d *Device) QPNums() []uint32 {
	d.mu.Lock()
	defer d.mu.Unlock()
	out := make([]uint32, 0, len(d.qps))
	for n := range d.qps {
		out = append(out, n)
	}
	return out
}

// QPAttr returns the attributes a QP of d was last moved with
// (ibv_query_qp), e.g. the address vector's traffic class and service level.
func (d *Device) QPAttr(qpn uint32) (verbs.QPAttr, bool) {
	d.mu.Lock()
	q := d.qps[qpn]
	d.mu.Unlock()
	if q == nil {
		return verbs.QPAttr{}, false
	}
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.attr, true
}

// CompVectorOf returns the completion vector of the send CQ of a QP of d.
func (d *Device) CompVectorOf(qpn uint32) (int, bool) {
	d.mu.Lock()
	q := d.qps[qpn]
	d.mu.Unlock()
	if q == nil {
		return 0, false
	}
	return q.scq.vector, true
}

// Name returns the device name.
func (d *Device) Name() string { return d.spec.Name }

func (d *Device) contexts() []*context {
	out := make([]*context, 0, len(d.ctxs))
	for c := range d.ctxs {
		out = append(out, c)
	}
	return out
}

func (d *Device) active() bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.state == verbs.PortActive
}

// route finds the device a QP's address vector points at.
func (f *Fabric) route(ah verbs.AHAttr) *Device {
	f.mu.Lock()
	defer f.mu.Unlock()
	if ah.IsGlobal {
		return f.byGID[ah.DGID]
	}
	return f.byLID[ah.DLID]
}

// lose reports whether a packet from src to dst is lost.
func (f *Fabric) lose(src, dst *Device) bool {
	if dst == nil || !src.active() || !dst.active() {
		return true
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.cut[[2]*Device{src, dst}] {
		return true
	}
	if f.lost[src] > 0 {
		f.lost[src]--
		return true
	}
	return false
}

func (f *Fabric) newQPN() uint32 {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.nextQPN++
	return f.nextQPN & 0xffffff
}

func (f *Fabric) newKey() uint32 {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.nextKey += 0x100
	return f.nextKey
}
