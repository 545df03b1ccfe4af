package rdma

import (
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"

	"github.com/Mellanox/rdmamap"

	"github.com/mori-go/mori-go/verbs"
)

// DeviceFilter is a parsed MORI_RDMA_DEVICES value: a comma-separated list
// of devices to use, or, with a leading '^', of devices to leave out. An
// entry is an RDMA device name ("mlx5_0"), optionally with a port
// ("mlx5_0:1"), or a network interface name ("ens1f0") that is mapped to
// its RDMA device.
type DeviceFilter struct {
	Exclude bool
	Entries []DeviceEntry
}

// DeviceEntry is one entry of a DeviceFilter; Port 0 means any port.
type DeviceEntry struct {
	Name string
	Port uint8
}

// Empty reports a filter that keeps every device.
func (f DeviceFilter) Empty() bool { return len(f.Entries) == 0 }

func (f DeviceFilter) String() string {
	var parts []string
	for _, e := range f.Entries {
		if e.Port != 0 {
			parts = append(parts, fmt.Sprintf("%s:%d", e.Name, e.Port))
		} else {
			parts = append(parts, e.Name)
		}
	}
	s := strings.Join(parts, ",")
	if f.Exclude {
		s = "^" + s
	}
	return s
}

// ParseDeviceFilter parses the MORI_RDMA_DEVICES syntax.
func ParseDeviceFilter(s string) (DeviceFilter, error) {
	var f DeviceFilter
	s = strings.TrimSpace(s)
	if strings.HasPrefix(s, "^") {
		f.Exclude = true
		s = s[1:]
	}
	for _, item := range strings.Split(s, ",") {
		item = strings.TrimSpace(item)
		if item == "" {
			continue
		}
		e := DeviceEntry{Name: item}
		if i := strings.LastIndexByte(item, ':'); i >= 0 {
			p, err := strconv.ParseUint(item[i+1:], 10, 8)
			if err != nil || p == 0 {
				return DeviceFilter{}, fmt.Errorf("rdma devices %q: entry %q: bad port %q", s, item, item[i+1:])
			}
			e.Name, e.Port = item[:i], uint8(p)
		}
		if e.Name == "" || strings.ContainsAny(e.Name, "/ \t") {
			return DeviceFilter{}, fmt.Errorf("rdma devices %q: bad entry %q", s, item)
		}
		f.Entries = append(f.Entries, e)
	}
	if f.Exclude && len(f.Entries) == 0 {
		return DeviceFilter{}, fmt.Errorf("rdma devices %q: '^' with nothing to exclude", s)
	}
	return f, nil
}

// NetdevMapper maps a network interface to its RDMA device.
// rdmamap.GetRdmaDeviceForNetdevice is the production one.
type NetdevMapper func(netdev string) (string, error)

// rdmamapNetdev is the production NetdevMapper (rdmamap reads /sys).
func rdmamapNetdev(netdev string) (string, error) { return rdmamap.GetRdmaDeviceForNetdevice(netdev) }

// resolve returns, for each entry, the RDMA device it names: itself when
// a device has that name, else the device behind the network interface.
func (f DeviceFilter) resolve(devices []verbs.DeviceInfo, netdev NetdevMapper) ([]DeviceEntry, error) {
	known := make(map[string]bool, len(devices))
	for _, d := range devices {
		known[d.Name] = true
	}
	out := make([]DeviceEntry, 0, len(f.Entries))
	for _, e := range f.Entries {
		if !known[e.Name] && netdev != nil {
			if dev, err := netdev(e.Name); err == nil && dev != "" {
				e.Name = dev
			}
		}
		if !known[e.Name] && !f.Exclude {
			return nil, fmt.Errorf("rdma devices %q: no RDMA device or network interface %q", f, e.Name)
		}
		out = append(out, e)
	}
	return out, nil
}

// Topology reads PCI topology from a sysfs tree. Root is "/sys" in
// production and a fake tree in tests.
type Topology struct {
	Root string
}

// SystemTopology reads the real /sys.
func SystemTopology() Topology { return Topology{Root: "/sys"} }

// PCIPath returns the chain of PCI devices from the root complex down to
// bdf, e.g. ["pci0000:00", "0000:00:01.0", "0000:01:00.0"].
func (t Topology) PCIPath(bdf string) ([]string, error) {
	bdf = NormalizeBusID(bdf)
	link := filepath.Join(t.Root, "bus", "pci", "devices", bdf)
	real, err := filepath.EvalSymlinks(link)
	if err != nil {
		return nil, fmt.Errorf("pci device %s: %w", bdf, err)
	}
	devices, err := filepath.EvalSymlinks(filepath.Join(t.Root, "devices"))
	if err != nil {
		return nil, fmt.Errorf("pci device %s: %w", bdf, err)
	}
	rel, err := filepath.Rel(devices, real)
	if err != nil || strings.HasPrefix(rel, "..") {
		return nil, fmt.Errorf("pci device %s: %s is outside %s", bdf, real, devices)
	}
	return strings.Split(filepath.ToSlash(rel), "/"), nil
}

// RDMADevicePCI returns the PCI address of an RDMA device.
func (t Topology) RDMADevicePCI(name string) (string, error) {
	real, err := filepath.EvalSymlinks(filepath.Join(t.Root, "class", "infiniband", name, "device"))
	if err != nil {
		return "", fmt.Errorf("rdma device %s: %w", name, err)
	}
	return filepath.Base(real), nil
}

// NUMANode returns the NUMA node of a PCI device, -1 when unknown.
func (t Topology) NUMANode(bdf string) int {
	b, err := os.ReadFile(filepath.Join(t.Root, "bus", "pci", "devices", NormalizeBusID(bdf), "numa_node"))
	if err != nil {
		return -1
	}
	n, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil {
		return -1
	}
	return n
}

// NormalizeBusID lower-cases a PCI address and adds the domain when
// missing ("3B:00.0" becomes "0000:3b:00.0"), as GPU runtimes print them
// differently from sysfs.
func NormalizeBusID(s string) string {
	s = strings.ToLower(strings.TrimSpace(s))
	if strings.Count(s, ":") == 1 {
		s = "0000:" + s
	}
	// CUDA prints an 8-digit domain ("00000000:3b:00.0").
	if i := strings.IndexByte(s, ':'); i > 4 && strings.Trim(s[:i-4], "0") == "" {
		s = s[i-4:]
	}
	return s
}

// pciDistance is the number of hops between two devices through their
// closest common bridge; devices under different root complexes are
// farther apart than any two under the same one.
func pciDistance(a, b []string) int {
	common := 0
	for common < len(a) && common < len(b) && a[common] == b[common] {
		common++
	}
	if common == 0 {
		return 1000 + len(a) + len(b)
	}
	return len(a) + len(b) - 2*common
}

// NICRank is one NIC's distance to a GPU.
type NICRank struct {
	Name     string
	PCIAddr  string
	Distance int // PCI hops; -1 when the NIC's place is unknown
	SameNUMA bool
}

// RankNICs orders nics by closeness to the GPU at gpuBDF: fewer PCI hops
// first, then same NUMA node, then name. NICs whose place is unknown come
// last.
func (t Topology) RankNICs(gpuBDF string, nics []verbs.DeviceInfo) ([]NICRank, error) {
	gpath, err := t.PCIPath(gpuBDF)
	if err != nil {
		return nil, fmt.Errorf("gpu: %w", err)
	}
	gnuma := t.NUMANode(gpuBDF)
	out := make([]NICRank, 0, len(nics))
	for _, n := range nics {
		r := NICRank{Name: n.Name, PCIAddr: n.PCIAddr, Distance: -1}
		if r.PCIAddr == "" {
			r.PCIAddr, _ = t.RDMADevicePCI(n.Name)
		}
		if r.PCIAddr != "" {
			if p, err := t.PCIPath(r.PCIAddr); err == nil {
				r.Distance = pciDistance(gpath, p)
				r.SameNUMA = gnuma >= 0 && t.NUMANode(r.PCIAddr) == gnuma
			}
		}
		out = append(out, r)
	}
	sort.SliceStable(out, func(i, j int) bool {
		a, b := out[i], out[j]
		if (a.Distance < 0) != (b.Distance < 0) {
			return b.Distance < 0
		}
		if a.Distance != b.Distance {
			return a.Distance < b.Distance
		}
		if a.SameNUMA != b.SameNUMA {
			return a.SameNUMA
		}
		return a.Name < b.Name
	})
	return out, nil
}

// SelectGID picks the GID a port is addressed by. index >= 0 forces that
// entry (MORI_IB_GID_INDEX). Otherwise GIDs of container bridges and
// overlays (docker0, veth*, cni*, flannel*, ...) come last; InfiniBand
// uses the first valid entry, and RoCE prefers RoCE v2 over v1, then
// IPv4-mapped over global IPv6 over link-local addresses, then the lowest
// index.
func SelectGID(entries []verbs.GIDEntry, link verbs.LinkLayer, index int) (verbs.GIDEntry, error) {
	if index >= 0 {
		for _, e := range entries {
			if e.Index == index {
				if e.GID.IsZero() {
					return verbs.GIDEntry{}, fmt.Errorf("gid index %d is empty", index)
				}
				return e, nil
			}
		}
		return verbs.GIDEntry{}, fmt.Errorf("gid index %d is not in the table of %d entries", index, len(entries))
	}
	best, bestScore := verbs.GIDEntry{}, -1
	for _, e := range entries {
		if e.GID.IsZero() {
			continue
		}
		score := 0
		if link == verbs.LinkEthernet {
			ip := net.IP(e.GID[:])
			switch {
			case ip.To4() != nil:
				score = 30
			case ip.IsLinkLocalUnicast():
				score = 10
			default:
				score = 20
			}
			if e.Type == verbs.GIDTypeRoCEv2 {
				score += 100
			}
		}
		if !virtualNetdev(e.Netdev) {
			score += 1000 // a GID of a container bridge or overlay routes nowhere useful
		}
		if score > bestScore {
			best, bestScore = e, score
		}
	}
	if bestScore < 0 {
		return verbs.GIDEntry{}, errors.New("no valid gid in the port's table")
	}
	return best, nil
}

// virtualNetdevPrefixes name the interfaces of containers, bridges and
// overlays, whose addresses also appear in a RoCE port's GID table when
// they sit on the port's netdev (Mooncake skips them the same way).
var virtualNetdevPrefixes = []string{"docker", "veth", "br-", "virbr", "cni", "flannel", "cali", "vxlan", "weave", "kube-", "tunl", "lxc", "podman"}

func virtualNetdev(name string) bool {
	for _, p := range virtualNetdevPrefixes {
		if strings.HasPrefix(name, p) {
			return true
		}
	}
	return false
}
