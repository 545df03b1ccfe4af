package rdma

import (
	"errors"
	"fmt"
	"strings"

	"github.com/mori-go/mori-go/core"
	"github.com/mori-go/mori-go/verbs"
)

// Which NIC carries a transfer: every region has a home NIC, the one
// nearest its GPU by PCI topology (fewest hops under /sys/devices, then
// the same NUMA node, then the name), as MORI-IO (MatchGpuAndNic) and
// Mooncake (selectDevice) choose. It is found when the region is
// registered, so that an engine whose backend exists before its KV cache
// (SGLang's order) still uses the NIC of its GPU. Host memory, and GPU
// memory whose location is unknown, uses the backend's default NIC:
// nearest Options.GPUBusID or the GPU of a region registered before the
// backend, else the first by name.
//
// An initiator keeps one lane of qp_per_transfer QPs per local NIC it
// sends from; a transfer goes on the lane of its local region's home NIC.
// A target creates its side of every lane on the home NIC of the GPU
// memory it registered last (its KV cache), else its default NIC.

// homes caches the home NIC of each GPU.
type homes struct {
	byGPU  map[int]*nic
	target *nic // the NIC targets create QPs on
}

// defaultNIC picks the NIC for memory of no known GPU: nearest the GPU
// named in the options or of a region registered before the backend.
func (b *Backend) defaultNIC() (*nic, string) {
	gpu := b.s.GPUBusID
	if gpu == "" {
		gpu = gpuBusIDFromRegistry(b.env)
	}
	if gpu == "" || len(b.nics) == 1 {
		return b.nics[0], "first active port by name (no GPU location known)"
	}
	n, why := b.nearestNIC(gpu)
	if n == nil {
		return b.nics[0], "first active port by name (" + why + ")"
	}
	return n, why
}

// nearestNIC returns the NIC nearest the GPU at PCI address busID, or nil
// and why not.
func (b *Backend) nearestNIC(busID string) (*nic, string) {
	infos := make([]verbs.DeviceInfo, len(b.nics))
	for i, n := range b.nics {
		infos[i] = n.device
	}
	ranked, err := b.s.Topology.RankNICs(busID, infos)
	if err != nil {
		return nil, fmt.Sprintf("topology of GPU %s unknown: %v", busID, err)
	}
	if len(ranked) == 0 || ranked[0].Distance < 0 {
		return nil, fmt.Sprintf("no NIC shares a PCI tree with GPU %s", busID)
	}
	for _, n := range b.nics {
		if n.device.Name == ranked[0].Name {
			return n, fmt.Sprintf("nearest to GPU %s (%d PCI hops)", busID, ranked[0].Distance)
		}
	}
	return nil, "ranking named an unknown NIC"
}

// homeOf returns the home NIC of a region being registered.
func (b *Backend) homeOf(r *core.Region) *nic {
	if r.Location != core.LocationGPU || r.Device < 0 || len(b.nics) == 1 {
		return b.fallback
	}
	b.homeMu.Lock()
	defer b.homeMu.Unlock()
	if n := b.homes.byGPU[r.Device]; n != nil {
		b.homes.target = n
		return n
	}
	n, why := b.fallback, "the default NIC: the GPU driver names no PCI address"
	if bus, ok := b.env.GPU.(BusIDer); ok {
		if id, err := bus.PCIBusID(r.Device); err != nil {
			why = fmt.Sprintf("the default NIC: PCI address of GPU %d: %v", r.Device, err)
		} else if near, w := b.nearestNIC(id); near != nil {
			n, why = near, w
		} else {
			why = "the default NIC: " + w
		}
	}
	b.log.Info("rdma: nic for GPU", "gpu", r.Device, "device", n.name, "port", n.port, "why", why)
	b.homes.byGPU[r.Device] = n
	b.homes.target = n
	return n
}

// targetNIC returns the NIC a target creates its side of a QP on, for a
// peer NIC of the given link layer.
func (b *Backend) targetNIC(link verbs.LinkLayer) (*nic, error) {
	b.homeMu.Lock()
	n := b.homes.target
	b.homeMu.Unlock()
	if n != nil && n.link() == link && !n.dead.Load() {
		return n, nil
	}
	return b.nicWithLink(func(l verbs.LinkLayer) bool { return l == link })
}

// laneNIC returns the NIC an initiator sends from for memory at home
// towards a peer with NICs remote: home, or another NIC when home shares
// no link layer with the peer.
func (b *Backend) laneNIC(home *nic, remote []NICInfo) (*nic, error) {
	ok := func(l verbs.LinkLayer) bool {
		for _, r := range remote {
			if r.Link == l {
				return true
			}
		}
		return false
	}
	if ok(home.link()) && !home.dead.Load() {
		return home, nil
	}
	return b.nicWithLink(ok)
}

func (b *Backend) nicWithLink(ok func(verbs.LinkLayer) bool) (*nic, error) {
	var dead []string
	for _, n := range b.nics {
		switch {
		case !ok(n.link()):
		case n.dead.Load():
			dead = append(dead, n.name)
		default:
			return n, nil
		}
	}
	if len(dead) > 0 {
		return nil, fmt.Errorf("the NICs that share a link layer with the peer failed (IBV_EVENT_DEVICE_FATAL: %s)", strings.Join(dead, ", "))
	}
	return nil, errors.New("no local NIC shares a link layer (InfiniBand or Ethernet) with the peer's")
}

func gpuBusIDFromRegistry(env core.BackendEnv) string {
	b, ok := env.GPU.(BusIDer)
	if !ok || env.Registry == nil {
		return ""
	}
	device := -1
	env.Registry.Each(func(r *core.Region) {
		if device < 0 && r.Location == core.LocationGPU && r.Device >= 0 {
			device = r.Device
		}
	})
	if device < 0 {
		return ""
	}
	id, err := b.PCIBusID(device)
	if err != nil {
		return ""
	}
	return id
}

// DefaultNIC names the NIC used for memory of no known GPU.
func (b *Backend) DefaultNIC() string { return b.fallback.name }
