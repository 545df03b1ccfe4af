package rdma

import (
	"errors"
	"fmt"
	"sort"
	"strings"

	"github.com/mori-go/mori-go/core"
	"github.com/mori-go/mori-go/verbs"
)

// portChoice is one active port found while selecting NICs.
type portChoice struct {
	info verbs.DeviceInfo
	ctx  verbs.Context
	dev  verbs.DeviceAttr
	port uint8
	attr verbs.PortAttr
}

// openPorts opens every device that the filter keeps and returns its active
// ports. It closes what it does not return.
func openPorts(p verbs.Provider, s *settings) ([]portChoice, error) {
	devices, err := p.Devices()
	if err != nil {
		if errors.Is(err, verbs.ErrNotSupported) {
			return nil, err
		}
		return nil, fmt.Errorf("%w: list RDMA devices: %v", verbs.ErrNotSupported, err)
	}
	if len(devices) == 0 {
		return nil, fmt.Errorf("%w: no RDMA device", verbs.ErrNotSupported)
	}
	sort.Slice(devices, func(i, j int) bool { return devices[i].Name < devices[j].Name })
	entries, err := s.filter.resolve(devices, s.Netdev)
	if err != nil {
		return nil, core.Errorf(core.ErrInvalidArgs, "%w", err)
	}
	keep := portFilter{filter: s.filter, entries: entries}
	var out []portChoice
	var notes []string
	for _, d := range devices {
		if keep.keeps(d.Name, 0) {
			out = append(out, activePorts(p, d, keep, &notes)...)
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
		return nil, fmt.Errorf("%w: %s", verbs.ErrNotSupported, what)
	}
	return out, nil
}

// portFilter is a device filter resolved against the devices present.
type portFilter struct {
	filter  DeviceFilter
	entries []DeviceEntry
}

func (f portFilter) matches(name string, port uint8) bool {
	for _, e := range f.entries {
		if e.Name == name && (e.Port == 0 || port == 0 || e.Port == port) {
			return true
		}
	}
	return false
}

// keeps reports whether the filter keeps a port (port 0: the device as a
// whole, which an exclude entry with a port still keeps).
func (f portFilter) keeps(name string, port uint8) bool {
	switch {
	case f.filter.Empty():
		return true
	case f.filter.Exclude && port == 0:
		for _, e := range f.entries {
			if e.Name == name && e.Port == 0 {
				return false
			}
		}
		return true
	case f.filter.Exclude:
		return !f.matches(name, port)
	}
	return f.matches(name, port)
}

// activePorts opens device d and returns its active ports that the filter
// keeps, each with a context of its own (so that closing one closes nothing
// another still uses). Why a device or port is left out goes to notes.
func activePorts(p verbs.Provider, d verbs.DeviceInfo, keep portFilter, notes *[]string) []portChoice {
	note := func(format string, args ...any) { *notes = append(*notes, fmt.Sprintf(format, args...)) }
	ctx, err := p.Open(d.Name)
	if err != nil {
		note("%s: %v", d.Name, err)
		return nil
	}
	dev, err := ctx.QueryDevice()
	if err != nil {
		note("%s: %v", d.Name, err)
		ctx.Close()
		return nil
	}
	var out []portChoice
	for port := uint8(1); port >= 1 && port <= dev.PhysPortCnt; port++ {
		if !keep.keeps(d.Name, port) {
			continue
		}
		attr, err := ctx.QueryPort(port)
		if err != nil {
			note("%s port %d: %v", d.Name, port, err)
			continue
		}
		if attr.State != verbs.PortActive {
			note("%s port %d is %s", d.Name, port, attr.State)
			continue
		}
		c := portChoice{info: d, ctx: ctx, dev: dev, port: port, attr: attr}
		if len(out) > 0 {
			if c.ctx, err = p.Open(d.Name); err != nil {
				note("%s port %d: %v", d.Name, port, err)
				continue
			}
		}
		out = append(out, c)
	}
	if len(out) == 0 {
		ctx.Close()
	}
	return out
}
