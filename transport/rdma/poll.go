package rdma

import (
	"fmt"
	"runtime"
	"time"

	"github.com/mori-go/mori-go/core"
	"github.com/mori-go/mori-go/verbs"
)

// goTracked runs f in a goroutine that Close waits for; it reports false
// (and runs nothing) once the backend is closed.
func (b *Backend) goTracked(f func()) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		return false
	}
	b.wg.Add(1)
	go func() {
		defer b.wg.Done()
		f()
	}()
	return true
}

// wake tells the polling loop that work was posted.
func (b *Backend) wake() {
	select {
	case b.kick <- struct{}{}:
	default:
	}
}

// Polling-mode pacing: after pollSpin empty rounds the loop sleeps, a
// little while work is outstanding and up to idleWait when nothing is (a
// target then sees notifications within idleWait).
const (
	pollSpin    = 64
	busyWaitMax = 200 * time.Microsecond
	idleWait    = time.Millisecond
)

// pollLoop polls every CQ of the backend (PollCqMode 0).
func (b *Backend) pollLoop() {
	defer b.wg.Done()
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	idle := 0
	for {
		select {
		case <-b.stop:
			return
		default:
		}
		got := 0
		for _, c := range *b.conns.Load() {
			got += c.poll()
		}
		if got > 0 {
			idle = 0
			continue
		}
		idle++
		if idle < pollSpin {
			runtime.Gosched()
			continue
		}
		wait := idleWait
		if b.inflight.Load() > 0 {
			wait = min(busyWaitMax, time.Microsecond<<min(idle-pollSpin, 8))
		}
		timer.Reset(wait)
		select {
		case <-b.stop:
			timer.Stop()
			return
		case <-b.kick:
			timer.Stop()
			idle = 0
		case <-timer.C:
		}
	}
}

// eventLoop waits for completion events of one NIC's CQs (PollCqMode 1).
func (b *Backend) eventLoop(n *nic) {
	defer b.wg.Done()
	for {
		select {
		case <-b.stop:
			return
		default:
		}
		cq, err := n.ch.Wait(50 * time.Millisecond)
		if err != nil {
			b.log.Warn("rdma: waiting for completion events", "device", n.name, "err", err)
			if !b.backoff(50 * time.Millisecond) {
				return
			}
			continue
		}
		if cq == nil {
			continue
		}
		if v, ok := b.byCQ.Load(cq); ok {
			v.(*conn).pollEvent()
		}
	}
}

// asyncLoop handles one NIC's asynchronous events: a QP or CQ gone fatal
// fails the QP's work at once (it may produce no completion), and a fatal
// device fails every QP on it.
func (b *Backend) asyncLoop(n *nic) {
	defer b.wg.Done()
	for {
		select {
		case <-b.stop:
			return
		default:
		}
		ev, ok, err := n.ctx.WaitAsyncEvent(50 * time.Millisecond)
		if err != nil {
			b.log.Warn("rdma: waiting for async events", "device", n.name, "err", err)
			if !b.backoff(50 * time.Millisecond) {
				return
			}
			continue
		}
		if !ok {
			continue
		}
		var victims []*conn
		switch ev.Type {
		case verbs.EventQPFatal, verbs.EventQPReqErr, verbs.EventQPAccessErr:
			if v, ok := n.qpns.Load(ev.QPNum); ok {
				victims = append(victims, v.(*conn))
			}
		case verbs.EventCQErr:
			if v, ok := b.byCQ.Load(ev.CQ); ok {
				victims = append(victims, v.(*conn))
			}
		case verbs.EventDeviceFatal:
			for _, c := range *b.conns.Load() {
				if c.nic == n {
					victims = append(victims, c)
				}
			}
			b.log.Error("rdma: device fatal error", "device", n.name)
		case verbs.EventPortErr:
			b.log.Warn("rdma: port went down", "device", n.name, "port", ev.Port)
		default:
			b.log.Debug("rdma: async event", "device", n.name, "event", ev.Type)
		}
		for _, c := range victims {
			c.mu.Lock()
			c.breakLocked(&core.Error{Code: core.ErrRDMAOp, Msg: fmt.Sprintf("rdma qp %d to peer %q (%s port %d, qpn %d): async event %s", c.idx, c.peer, n.name, n.port, c.local.QPN, ev.Type)})
			c.mu.Unlock()
		}
	}
}
