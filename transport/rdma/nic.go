package rdma

import (
	"errors"
	"fmt"
	"sync"
	"sync/atomic"

	"github.com/mori-go/mori-go/verbs"
)

// nic is one port of one device that the backend uses.
type nic struct {
	idx    int
	name   string
	device verbs.DeviceInfo
	ctx    verbs.Context
	pd     verbs.PD
	ch     verbs.CompChannel // event mode only
	dev    verbs.DeviceAttr
	port   uint8
	attr   verbs.PortAttr // as found at start: link layer, limits
	mtu    verbs.MTU      // path MTU cap: the active MTU, or less if configured
	addr   atomic.Pointer[nicAddr]
	dead   atomic.Bool // the device reported IBV_EVENT_DEVICE_FATAL
	// vectors counts the CQs created, to rotate their completion vectors.
	vectors atomic.Uint32

	qpns sync.Map // qpn -> *conn, for async events
}

// nicAddr is what a port's peers address it by; it changes when the port's
// LID or GID table does (an IP address moved, a subnet manager
// reassigned LIDs).
type nicAddr struct {
	gid verbs.GIDEntry
	lid uint16
}

func (n *nic) address() nicAddr { return *n.addr.Load() }

func (n *nic) info() NICInfo {
	a := n.address()
	return NICInfo{Name: n.name, GID: a.gid.GID, LID: a.lid, Port: n.port, MTU: n.mtu, Link: n.link()}
}

func (n *nic) link() verbs.LinkLayer {
	if n.attr.LinkLayer == verbs.LinkEthernet {
		return verbs.LinkEthernet
	}
	return verbs.LinkInfiniBand
}

func (b *Backend) setupNIC(i int, pc portChoice) (*nic, error) {
	n := &nic{idx: i, name: pc.info.Name, device: pc.info, ctx: pc.ctx, dev: pc.dev, port: pc.port, attr: pc.attr, mtu: pc.attr.ActiveMTU}
	if b.s.PathMTU != 0 {
		if m, _ := verbs.MTUFromBytes(b.s.PathMTU); m < n.mtu {
			n.mtu = m
		}
	}
	if n.mtu.Bytes() == 0 {
		n.mtu = verbs.MTU1024
	}
	a, err := b.readAddress(n)
	if err != nil {
		pc.ctx.Close()
		return nil, err
	}
	n.addr.Store(&a)
	if n.pd, err = pc.ctx.AllocPD(); err != nil {
		pc.ctx.Close()
		return nil, err
	}
	if b.s.eventMode {
		if n.ch, err = pc.ctx.CreateCompChannel(); err != nil {
			n.pd.Close()
			pc.ctx.Close()
			return nil, err
		}
	}
	return n, nil
}

func (b *Backend) teardownNICs() {
	for _, n := range b.nics {
		var errs []error
		if n.ch != nil {
			errs = append(errs, n.ch.Close())
		}
		errs = append(errs, n.pd.Close(), n.ctx.Close())
		if err := errors.Join(errs...); err != nil {
			b.log.Warn("rdma: closing a NIC", "device", n.name, "err", err)
		}
	}
	b.nics = nil
}

// readAddress reads the port's LID and GID table and selects the GID.
func (b *Backend) readAddress(n *nic) (nicAddr, error) {
	attr, err := n.ctx.QueryPort(n.port)
	if err != nil {
		return nicAddr{}, fmt.Errorf("%s port %d: %w", n.name, n.port, err)
	}
	var gids []verbs.GIDEntry
	for j := 0; j < attr.GIDTableLen && j < 256; j++ {
		if e, err := n.ctx.QueryGID(n.port, j); err == nil {
			gids = append(gids, e)
		}
	}
	a := nicAddr{lid: attr.LID}
	gid, err := SelectGID(gids, n.link(), b.s.gidIndex)
	switch {
	case err != nil && n.link() == verbs.LinkEthernet:
		return a, fmt.Errorf("%w: %s port %d: %v", verbs.ErrNotSupported, n.name, n.port, err)
	case err == nil:
		a.gid = gid
	}
	if n.link() == verbs.LinkInfiniBand && a.lid == 0 && a.gid.GID.IsZero() {
		return a, fmt.Errorf("%w: %s port %d: InfiniBand port without a LID (no subnet manager?)", verbs.ErrNotSupported, n.name, n.port)
	}
	return a, nil
}

// refreshAddress reads the port's address again after an event said it
// changed. QPs connected to the old address fail and are rebuilt; the new
// ones carry the new address in their CONNECT.
func (b *Backend) refreshAddress(n *nic, why verbs.AsyncEventType) {
	a, err := b.readAddress(n)
	if err != nil {
		b.log.Warn("rdma: reading the port's address again", "device", n.name, "port", n.port, "event", why, "err", err)
		return
	}
	if old := n.address(); old != a {
		b.log.Info("rdma: port address changed", "device", n.name, "port", n.port, "event", why,
			"gid", a.gid.GID, "gid_index", a.gid.Index, "lid", a.lid, "old_gid", old.gid.GID, "old_lid", old.lid)
	}
	n.addr.Store(&a)
}
