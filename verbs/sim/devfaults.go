package sim

import (
	"fmt"
	"syscall"

	"github.com/mori-go/mori-go/verbs"
)

// ChangeAddress gives d's port a new IPv4 address, as moving an address
// between interfaces does: on RoCE its IPv4-mapped GIDs change (at the same
// table indices) and the old ones stop routing to it. Its contexts get
// IBV_EVENT_GID_CHANGE.
func (f *Fabric) ChangeAddress(d *Device) {
	f.mu.Lock()
	f.nextDev++
	n := f.nextDev
	f.mu.Unlock()
	v4 := verbs.GID{10: 0xff, 11: 0xff, 12: 10, 13: 1, 14: byte(n >> 8), 15: byte(n)}
	var gone []verbs.GID
	d.mu.Lock()
	for i, e := range d.gids {
		if e.GID[10] == 0xff && e.GID[11] == 0xff {
			gone = append(gone, e.GID)
			d.gids[i].GID = v4
		}
	}
	ctxs := d.contexts()
	d.mu.Unlock()
	f.mu.Lock()
	for _, g := range gone {
		delete(f.byGID, g)
	}
	f.byGID[v4] = d
	f.mu.Unlock()
	for _, c := range ctxs {
		c.raise(verbs.AsyncEvent{Type: verbs.EventGIDChange, Port: 1})
	}
}

// FailDevice makes d fail as a NIC whose firmware or PCI link died: every
// QP on it goes to the error state (its work flushed), every verb on its
// open contexts fails with EIO from then on, and the contexts get
// IBV_EVENT_DEVICE_FATAL. A context opened afterwards works (the device was
// reset).
func (f *Fabric) FailDevice(d *Device) {
	d.mu.Lock()
	ctxs := d.contexts()
	qps := make([]*qp, 0, len(d.qps))
	for _, q := range d.qps {
		qps = append(qps, q)
	}
	d.mu.Unlock()
	for _, c := range ctxs {
		c.dead.Store(true)
	}
	for _, q := range qps {
		q.toError()
	}
	for _, c := range ctxs {
		c.raise(verbs.AsyncEvent{Type: verbs.EventDeviceFatal})
	}
}

// gid returns entry index of d's GID table.
func (d *Device) gid(index int) verbs.GIDEntry {
	d.mu.Lock()
	defer d.mu.Unlock()
	if index < len(d.gids) {
		return d.gids[index]
	}
	return verbs.GIDEntry{Index: index}
}

// fatal is the error of every verb on a context whose device failed.
func (c *context) fatal(what string) error {
	if c.dead.Load() {
		return fmt.Errorf("sim %s: %s: device failed: %w", c.d.spec.Name, what, syscall.EIO)
	}
	return nil
}
