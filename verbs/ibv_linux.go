//go:build linux && cgo

package verbs

/*
#cgo LDFLAGS: -ldl
#cgo noescape mg_post_send
#cgo nocallback mg_post_send
#cgo noescape mg_post_recv
#cgo nocallback mg_post_recv
#cgo noescape mg_poll_cq
#cgo nocallback mg_poll_cq
#include <stdlib.h>
#include "ibv.h"
*/
import "C"

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"time"
	"unsafe"
)

// LibName is the libibverbs soname that System loads.
const LibName = "libibverbs.so.1"

// ibvLib is a loaded libibverbs: its function table lives in C memory and
// is never freed (a verbs library is not unloaded while devices may be open).
type ibvLib struct {
	t    *C.mg_ibv
	name string
}

func loadLib(name string) (*ibvLib, error) {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	t := (*C.mg_ibv)(C.calloc(1, C.size_t(unsafe.Sizeof(C.mg_ibv{}))))
	var errbuf [512]C.char
	cname := C.CString(name)
	defer C.free(unsafe.Pointer(cname))
	if C.mg_load(cname, t, &errbuf[0], C.size_t(len(errbuf))) != 0 {
		C.free(unsafe.Pointer(t))
		return nil, fmt.Errorf("%w: load %s: %s", ErrNotSupported, name, C.GoString(&errbuf[0]))
	}
	return &ibvLib{t: t, name: name}, nil
}

type ibvProvider struct {
	name string
	once sync.Once
	lib  *ibvLib
	err  error
}

var systemProvider = sync.OnceValue(func() *ibvProvider { return &ibvProvider{name: LibName} })

// System returns the provider over the host's libibverbs, loaded with
// dlopen on first use. Without libibverbs its methods return errors
// wrapping ErrNotSupported.
func System() Provider { return systemProvider() }

// Load loads the verbs library name now (tests pass a missing name to
// check the fallback); the error wraps ErrNotSupported.
func Load(name string) (Provider, error) {
	p := &ibvProvider{name: name}
	if _, err := p.load(); err != nil {
		return nil, err
	}
	return p, nil
}

func (p *ibvProvider) load() (*ibvLib, error) {
	p.once.Do(func() { p.lib, p.err = loadLib(p.name) })
	return p.lib, p.err
}

func (p *ibvProvider) Devices() ([]DeviceInfo, error) {
	lib, err := p.load()
	if err != nil {
		return nil, err
	}
	var n C.int
	list, _ := C.mg_get_device_list(lib.t, &n)
	if list == nil {
		// NULL with ENOSYS means no kernel support; either way: none.
		return nil, nil
	}
	defer C.mg_free_device_list(lib.t, list)
	var out []DeviceInfo
	for i := 0; i < int(C.mg_device_count(list)); i++ {
		d := DeviceInfo{Name: C.GoString(C.mg_device_name(list, C.int(i)))}
		path := C.GoString(C.mg_device_ibdev_path(list, C.int(i)))
		if link, err := filepath.EvalSymlinks(filepath.Join(path, "device")); err == nil {
			d.PCIAddr = filepath.Base(link)
		}
		out = append(out, d)
	}
	return out, nil
}

func (p *ibvProvider) Open(name string) (Context, error) {
	lib, err := p.load()
	if err != nil {
		return nil, err
	}
	var n C.int
	list, lerr := C.mg_get_device_list(lib.t, &n)
	if list == nil {
		return nil, fmt.Errorf("%w: open %s: ibv_get_device_list: %v", ErrNotSupported, name, lerr)
	}
	defer C.mg_free_device_list(lib.t, list)
	for i := 0; i < int(C.mg_device_count(list)); i++ {
		if C.GoString(C.mg_device_name(list, C.int(i))) != name {
			continue
		}
		path := C.GoString(C.mg_device_ibdev_path(list, C.int(i)))
		ctx, err := C.mg_open_device(lib.t, list, C.int(i))
		if ctx == nil {
			return nil, fmt.Errorf("ibv_open_device %s: %w", name, err)
		}
		return &ibvContext{lib: lib, ctx: ctx, name: name, ibdevPath: path, cqs: make(map[*C.struct_ibv_cq]*ibvCQ)}, nil
	}
	return nil, fmt.Errorf("open %s: no such RDMA device", name)
}

type ibvContext struct {
	lib       *ibvLib
	ctx       *C.struct_ibv_context
	name      string
	ibdevPath string

	// cqs maps the CQs of this context by their C pointer, so that an
	// IBV_EVENT_CQ_ERR names the CQ the backend knows.
	cqMu sync.Mutex
	cqs  map[*C.struct_ibv_cq]*ibvCQ
}

func rcErr(what string, rc C.int) error {
	if rc == 0 {
		return nil
	}
	if rc < 0 {
		rc = -rc
	}
	return fmt.Errorf("%s: %w", what, syscall.Errno(rc))
}

func nullErr(what string, err error) error {
	if err == nil {
		err = errors.New("failed")
	}
	return fmt.Errorf("%s: %w", what, err)
}

func (c *ibvContext) Name() string { return c.name }

func (c *ibvContext) QueryDevice() (DeviceAttr, error) {
	var a C.mg_device_attr
	if err := rcErr("ibv_query_device "+c.name, C.mg_query_device(c.lib.t, c.ctx, &a)); err != nil {
		return DeviceAttr{}, err
	}
	return DeviceAttr{
		PhysPortCnt: uint8(a.phys_port_cnt), MaxQPWR: int(a.max_qp_wr), MaxSGE: int(a.max_sge),
		MaxCQE: int(a.max_cqe), MaxQPRdAtom: int(a.max_qp_rd_atom), MaxQPInitRdAtom: int(a.max_qp_init_rd_atom),
	}, nil
}

func (c *ibvContext) QueryPort(port uint8) (PortAttr, error) {
	var a C.mg_port_attr
	if err := rcErr(fmt.Sprintf("ibv_query_port %s port %d", c.name, port), C.mg_query_port(c.lib.t, c.ctx, C.uint8_t(port), &a)); err != nil {
		return PortAttr{}, err
	}
	return PortAttr{
		State: PortState(a.state), MaxMTU: MTU(a.max_mtu), ActiveMTU: MTU(a.active_mtu),
		GIDTableLen: int(a.gid_tbl_len), MaxMsgSize: uint32(a.max_msg_sz), LID: uint16(a.lid),
		LinkLayer: LinkLayer(a.link_layer), ActiveWidth: uint8(a.active_width), ActiveSpeed: uint8(a.active_speed),
	}, nil
}

func (c *ibvContext) QueryGID(port uint8, index int) (GIDEntry, error) {
	var gid [16]C.uint8_t
	var typ C.int
	if err := rcErr(fmt.Sprintf("ibv_query_gid %s port %d index %d", c.name, port, index),
		C.mg_query_gid(c.lib.t, c.ctx, C.uint8_t(port), C.int(index), &gid[0], &typ)); err != nil {
		return GIDEntry{}, err
	}
	e := GIDEntry{Index: index}
	for i := range gid {
		e.GID[i] = byte(gid[i])
	}
	if typ >= 0 {
		e.Type = GIDType(typ)
	} else {
		e.Type = sysfsGIDType(c.ibdevPath, port, index)
	}
	if b, err := os.ReadFile(filepath.Join(c.ibdevPath, "ports", fmt.Sprint(port), "gid_attrs", "ndevs", fmt.Sprint(index))); err == nil {
		e.Netdev = strings.TrimSpace(string(b))
	}
	return e, nil
}

// sysfsGIDType reads the GID type that older libibverbs cannot return.
func sysfsGIDType(ibdevPath string, port uint8, index int) GIDType {
	b, err := os.ReadFile(filepath.Join(ibdevPath, "ports", fmt.Sprint(port), "gid_attrs", "types", fmt.Sprint(index)))
	if err != nil {
		return GIDTypeIB
	}
	return parseGIDType(string(b))
}

func parseGIDType(s string) GIDType {
	s = strings.ToLower(strings.TrimSpace(s))
	switch {
	case strings.Contains(s, "v2"):
		return GIDTypeRoCEv2
	case strings.Contains(s, "roce"):
		return GIDTypeRoCEv1
	}
	return GIDTypeIB
}

func (c *ibvContext) AllocPD() (PD, error) {
	pd, err := C.mg_alloc_pd(c.lib.t, c.ctx)
	if pd == nil {
		return nil, nullErr("ibv_alloc_pd "+c.name, err)
	}
	return &ibvPD{c: c, pd: pd}, nil
}

func (c *ibvContext) CreateCompChannel() (CompChannel, error) {
	ch, err := C.mg_create_comp_channel(c.lib.t, c.ctx)
	if ch == nil {
		return nil, nullErr("ibv_create_comp_channel "+c.name, err)
	}
	return &ibvChannel{c: c, ch: ch, cqs: make(map[*C.struct_ibv_cq]*ibvCQ)}, nil
}

func (c *ibvContext) CompVectors() int { return max(1, int(C.mg_num_comp_vectors(c.ctx))) }

func (c *ibvContext) CreateCQ(cqe int, ch CompChannel, vector int) (CQ, error) {
	var cch *C.struct_ibv_comp_channel
	var owner *ibvChannel
	if ch != nil {
		owner = ch.(*ibvChannel)
		cch = owner.ch
	}
	cq, err := C.mg_create_cq(c.lib.t, c.ctx, C.int(cqe), cch, C.int(vector%c.CompVectors()))
	if cq == nil {
		return nil, nullErr(fmt.Sprintf("ibv_create_cq %s (%d entries)", c.name, cqe), err)
	}
	q := &ibvCQ{c: c, cq: cq, ch: owner}
	c.cqMu.Lock()
	c.cqs[cq] = q
	c.cqMu.Unlock()
	if owner != nil {
		owner.mu.Lock()
		owner.cqs[cq] = q
		owner.mu.Unlock()
	}
	return q, nil
}

func timeoutMS(d time.Duration) C.int {
	if d <= 0 {
		return 0
	}
	return C.int(max(1, d.Milliseconds()))
}

func (c *ibvContext) WaitAsyncEvent(timeout time.Duration) (AsyncEvent, bool, error) {
	var typ, qpn C.uint32_t
	var cq *C.struct_ibv_cq
	var port C.int
	rc := C.mg_wait_async_event(c.lib.t, c.ctx, timeoutMS(timeout), &typ, &qpn, &cq, &port)
	if rc < 0 {
		return AsyncEvent{}, false, rcErr("ibv_get_async_event "+c.name, rc)
	}
	if rc == 0 {
		return AsyncEvent{}, false, nil
	}
	ev := AsyncEvent{Type: AsyncEventType(typ), QPNum: uint32(qpn), Port: uint8(port)}
	if cq != nil {
		c.cqMu.Lock()
		if q := c.cqs[cq]; q != nil {
			ev.CQ = q
		}
		c.cqMu.Unlock()
	}
	return ev, true, nil
}

func (c *ibvContext) Close() error {
	return rcErr("ibv_close_device "+c.name, C.mg_close_device(c.lib.t, c.ctx))
}

// checkABI compares the Go mirrors of verbs constants with the headers the
// C side was compiled against; a test calls it.
func checkABI() error {
	pairs := []struct {
		name   string
		goV, c int64
	}{
		{"IBV_QPS_RTS", int64(QPRTS), int64(C.IBV_QPS_RTS)},
		{"IBV_QPS_ERR", int64(QPError), int64(C.IBV_QPS_ERR)},
		{"IBV_QP_DEST_QPN", int64(QPAttrDestQPN), int64(C.IBV_QP_DEST_QPN)},
		{"IBV_QP_MAX_DEST_RD_ATOMIC", int64(QPAttrMaxDestRdAtom), int64(C.IBV_QP_MAX_DEST_RD_ATOMIC)},
		{"IBV_QP_MIN_RNR_TIMER", int64(QPAttrMinRNRTimer), int64(C.IBV_QP_MIN_RNR_TIMER)},
		{"IBV_QP_SQ_PSN", int64(QPAttrSQPSN), int64(C.IBV_QP_SQ_PSN)},
		{"IBV_QP_AV", int64(QPAttrAV), int64(C.IBV_QP_AV)},
		{"IBV_WR_RDMA_READ", int64(OpRDMARead), int64(C.IBV_WR_RDMA_READ)},
		{"IBV_WR_RDMA_WRITE_WITH_IMM", int64(OpRDMAWriteWithImm), int64(C.IBV_WR_RDMA_WRITE_WITH_IMM)},
		{"IBV_WR_SEND", int64(OpSend), int64(C.IBV_WR_SEND)},
		{"IBV_SEND_INLINE", int64(SendInline), int64(C.IBV_SEND_INLINE)},
		{"IBV_SEND_SIGNALED", int64(SendSignaled), int64(C.IBV_SEND_SIGNALED)},
		{"IBV_SEND_FENCE", int64(SendFence), int64(C.IBV_SEND_FENCE)},
		{"IBV_WC_WR_FLUSH_ERR", int64(WCWRFlushErr), int64(C.IBV_WC_WR_FLUSH_ERR)},
		{"IBV_WC_RETRY_EXC_ERR", int64(WCRetryExcErr), int64(C.IBV_WC_RETRY_EXC_ERR)},
		{"IBV_WC_REM_ACCESS_ERR", int64(WCRemAccessErr), int64(C.IBV_WC_REM_ACCESS_ERR)},
		{"IBV_WC_GENERAL_ERR", int64(WCGeneralErr), int64(C.IBV_WC_GENERAL_ERR)},
		{"IBV_WC_RECV", int64(WCRecv), int64(C.IBV_WC_RECV)},
		{"IBV_WC_RECV_RDMA_WITH_IMM", int64(WCRecvRDMAWithIm), int64(C.IBV_WC_RECV_RDMA_WITH_IMM)},
		{"IBV_WC_WITH_IMM", int64(WCFlagWithImm), int64(C.IBV_WC_WITH_IMM)},
		{"IBV_ACCESS_REMOTE_READ", int64(AccessRemoteRead), int64(C.IBV_ACCESS_REMOTE_READ)},
		{"IBV_ACCESS_RELAXED_ORDERING", int64(AccessRelaxedOrdering), int64(C.IBV_ACCESS_RELAXED_ORDERING)},
		{"IBV_MTU_4096", int64(MTU4096), int64(C.IBV_MTU_4096)},
		{"IBV_PORT_ACTIVE", int64(PortActive), int64(C.IBV_PORT_ACTIVE)},
		{"IBV_LINK_LAYER_ETHERNET", int64(LinkEthernet), int64(C.IBV_LINK_LAYER_ETHERNET)},
		{"IBV_GID_TYPE_ROCE_V2", int64(GIDTypeRoCEv2), int64(C.IBV_GID_TYPE_ROCE_V2)},
		{"IBV_EVENT_DEVICE_FATAL", int64(EventDeviceFatal), int64(C.IBV_EVENT_DEVICE_FATAL)},
		{"IBV_EVENT_PORT_ERR", int64(EventPortErr), int64(C.IBV_EVENT_PORT_ERR)},
		{"IBV_EVENT_GID_CHANGE", int64(EventGIDChange), int64(C.IBV_EVENT_GID_CHANGE)},
		{"IBV_EVENT_PORT_ACTIVE", int64(EventPortActive), int64(C.IBV_EVENT_PORT_ACTIVE)},
		{"IBV_EVENT_LID_CHANGE", int64(EventLIDChange), int64(C.IBV_EVENT_LID_CHANGE)},
		{"IBV_EVENT_CLIENT_REREGISTER", int64(EventClientReregister), int64(C.IBV_EVENT_CLIENT_REREGISTER)},
	}
	var errs []error
	for _, p := range pairs {
		if p.goV != p.c {
			errs = append(errs, fmt.Errorf("%s: Go %d, verbs.h %d", p.name, p.goV, p.c))
		}
	}
	return errors.Join(errs...)
}
