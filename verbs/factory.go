package verbs

import (
	"errors"
	"fmt"
	"sort"
	"strings"

	"github.com/mori-go/mori-go/core"
)

// Factory is the production RDMA factory: verbs through the host's
// libibverbs, loaded at run time. Where libibverbs cannot be loaded or no
// port is active it returns an error wrapping ErrNotSupported, and an
// engine in auto mode falls back to TCP.
func Factory(env core.BackendEnv, cfg any) (core.Backend, error) {
	return NewFactory(System(), Options{})(env, cfg)
}

// NewFactory returns a constructor of RDMA backends over provider p
// (System, or a simulated host from package sim), of the shape an engine
// takes (engine.Factory). The configuration given at creation is an
// RDMAConfig, a *RDMAConfig or nil (the defaults).
func NewFactory(p Provider, o Options) func(core.BackendEnv, any) (core.Backend, error) {
	return func(env core.BackendEnv, cfg any) (core.Backend, error) {
		var rc RDMAConfig
		switch v := cfg.(type) {
		case nil:
		case RDMAConfig:
			rc = v
		case *RDMAConfig:
			rc = *v
		default:
			return nil, core.Errorf(core.ErrInvalidArgs, "RDMA backend: configuration of type %T, want verbs.RDMAConfig", cfg)
		}
		s, err := newSettings(rc, o)
		if err != nil {
			return nil, err
		}
		return newBackend(p, env, s)
	}
}

// portChoice is one active port found while selecting NICs.
type portChoice struct {
	info DeviceInfo
	ctx  Context
	dev  DeviceAttr
	port uint8
	attr PortAttr
}

// openPorts opens every device that the filter keeps and returns its active
// ports. It closes what it does not return.
func openPorts(p Provider, s *settings) ([]portChoice, error) {
	devices, err := p.Devices()
	if err != nil {
		if errors.Is(err, ErrNotSupported) {
			return nil, err
		}
		return nil, fmt.Errorf("%w: list RDMA devices: %v", ErrNotSupported, err)
	}
	if len(devices) == 0 {
		return nil, fmt.Errorf("%w: no RDMA device", ErrNotSupported)
	}
	sort.Slice(devices, func(i, j int) bool { return devices[i].Name < devices[j].Name })
	entries, err := s.filter.resolve(devices, s.Netdev)
	if err != nil {
		return nil, core.Errorf(core.ErrInvalidArgs, "%w", err)
	}
	match := func(name string, port uint8) bool {
		for _, e := range entries {
			if e.Name == name && (e.Port == 0 || port == 0 || e.Port == port) {
				return true
			}
		}
		return false
	}
	// keepPort reports whether the filter keeps a port (port 0: the
	// device as a whole, which an exclude entry with a port still keeps).
	keepPort := func(name string, port uint8) bool {
		switch {
		case s.filter.Empty():
			return true
		case s.filter.Exclude && port == 0:
			for _, e := range entries {
				if e.Name == name && e.Port == 0 {
					return false
				}
			}
			return true
		case s.filter.Exclude:
			return !match(name, port)
		}
		return match(name, port)
	}
	var out []portChoice
	var notes []string
	for _, d := range devices {
		if !keepPort(d.Name, 0) {
			continue
		}
		ctx, err := p.Open(d.Name)
		if err != nil {
			notes = append(notes, fmt.Sprintf("%s: %v", d.Name, err))
			continue
		}
		dev, err := ctx.QueryDevice()
		if err != nil {
			notes = append(notes, fmt.Sprintf("%s: %v", d.Name, err))
			ctx.Close()
			continue
		}
		used := false
		for port := uint8(1); port >= 1 && port <= dev.PhysPortCnt; port++ {
			if !keepPort(d.Name, port) {
				continue
			}
			attr, err := ctx.QueryPort(port)
			if err != nil {
				notes = append(notes, fmt.Sprintf("%s port %d: %v", d.Name, port, err))
				continue
			}
			if attr.State != PortActive {
				notes = append(notes, fmt.Sprintf("%s port %d is %s", d.Name, port, attr.State))
				continue
			}
			c := portChoice{info: d, ctx: ctx, dev: dev, port: port, attr: attr}
			if used {
				// Each NIC owns its context, so that closing one closes
				// nothing another still uses.
				if c.ctx, err = p.Open(d.Name); err != nil {
					notes = append(notes, fmt.Sprintf("%s port %d: %v", d.Name, port, err))
					continue
				}
			}
			used = true
			out = append(out, c)
		}
		if !used {
			ctx.Close()
		}
	}
	if len(out) == 0 {
		what := "no active RDMA port"
		if !s.filter.Empty() {
			what += fmt.Sprintf(" among devices %q", s.filter.String())
		}
		if len(notes) > 0 {
			what += " (" + strings.Join(notes, "; ") + ")"
		}
		return nil, fmt.Errorf("%w: %s", ErrNotSupported, what)
	}
	return out, nil
}

// choosePorts narrows the active ports to those the backend uses: every
// port the filter names, or else the one nearest the GPU (or the first).
// It closes the others.
func choosePorts(ports []portChoice, s *settings, env core.BackendEnv) ([]portChoice, string) {
	if len(ports) > MaxNICs {
		for _, p := range ports[MaxNICs:] {
			p.ctx.Close()
		}
		ports = ports[:MaxNICs]
	}
	if (!s.filter.Empty() && !s.filter.Exclude) || len(ports) == 1 {
		return ports, "named by the device filter"
	}
	gpu := s.GPUBusID
	if gpu == "" {
		gpu = gpuBusIDFromRegistry(env)
	}
	pick, why := 0, "first active port by name (no GPU location known)"
	if gpu != "" {
		infos := make([]DeviceInfo, len(ports))
		for i, p := range ports {
			infos[i] = p.info
		}
		ranked, err := s.Topology.RankNICs(gpu, infos)
		if err == nil && len(ranked) > 0 && ranked[0].Distance >= 0 {
			for i, p := range ports {
				if p.info.Name == ranked[0].Name {
					pick = i
					break
				}
			}
			why = fmt.Sprintf("nearest to GPU %s (%d PCI hops)", gpu, ranked[0].Distance)
		} else if err != nil {
			why = fmt.Sprintf("first active port by name (topology of GPU %s unknown: %v)", gpu, err)
		}
	}
	keep := ports[pick]
	for i, p := range ports {
		if i != pick && p.ctx != keep.ctx {
			p.ctx.Close()
		}
	}
	return []portChoice{keep}, why
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
