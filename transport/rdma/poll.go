package rdma

import (
	"runtime"
	"time"
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

// Polling-mode pacing. While work is outstanding the loop polls without
// sleeping (yielding to other goroutines between rounds): Go rounds short
// timers of an otherwise idle process up to about a millisecond, so any
// sleep would add that to a transfer. It parks only when idle, after
// pollSpin empty rounds, until work is posted or idleWait passes (a target
// then sees notifications within idleWait), and when outstanding work has
// made no progress for stallSpin (a lost peer: the QP's retries take
// longer than that anyway).
const (
	pollSpin  = 64
	stallSpin = 200 * time.Millisecond
	idleWait  = time.Millisecond
)

// pollLoop polls every CQ of the backend (PollCqMode 0).
func (b *Backend) pollLoop() {
	defer b.wg.Done()
	idle, progress := 0, time.Now()
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
			idle, progress = 0, time.Now()
			continue
		}
		idle++
		busy := b.inflight.Load() > 0
		if (busy && time.Since(progress) < stallSpin) || (!busy && idle < pollSpin) {
			runtime.Gosched()
			continue
		}
		kicked, ok := b.park()
		if !ok {
			return
		}
		if kicked {
			idle, progress = 0, time.Now()
		}
	}
}

// park waits until work is posted (kicked), idleWait passes or the backend
// stops (ok false).
func (b *Backend) park() (kicked, ok bool) {
	timer := b.s.NewTimer(idleWait)
	defer timer.Stop()
	select {
	case <-b.stop:
		return false, false
	case <-b.kick:
		return true, true
	case <-timer.C:
		return false, true
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
