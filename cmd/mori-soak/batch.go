package main

import (
	"math"
	"math/rand/v2"
	"runtime"
	"sync"
	"time"

	"github.com/mori-go/mori-go/core"
	"github.com/mori-go/mori-go/core/engine"
)

// batch is one worker's batch: requests whose ranges lie in the worker's
// slot, none overlapping another.
func layout(r *rand.Rand, base uint64) [][]core.Range {
	n := 1 + r.IntN(8)
	out := make([][]core.Range, n)
	off := uint64(0)
	for i := range out {
		k := 1 + r.IntN(16)
		for range k {
			// Log-uniform sizes from 1 byte to 1 MiB.
			size := uint64(math.Exp(r.Float64() * math.Log(maxRange)))
			size = max(size, 1)
			gap := uint64(r.IntN(64))
			if off+gap+size > slot {
				break
			}
			out[i] = append(out[i], core.Range{LocalOffset: base + off + gap, RemoteOffset: base + off + gap, Size: size})
			off += gap + size
		}
	}
	// Drop empty requests (the slot filled up).
	k := 0
	for _, rs := range out {
		if len(rs) > 0 {
			out[k] = rs
			k++
		}
	}
	return out[:k]
}

func fill(r *rand.Rand, b []byte) {
	for i := 0; i < len(b); i += 8 {
		v := r.Uint64()
		for k := 0; k < 8 && i+k < len(b); k++ {
			b[i+k] = byte(v >> (8 * k))
		}
	}
}

func equal(a, b []byte) bool { return string(a) == string(b) }

func (s *soak) worker(w int, stop <-chan struct{}, wg *sync.WaitGroup) {
	defer wg.Done()
	// Even workers wait as a C or Python caller of the library does: on
	// their own OS thread, which reads its acknowledgements itself
	// (core.Driver); odd ones as a Go caller, parked.
	thread := w%2 == 0
	if thread {
		runtime.LockOSThread()
		defer runtime.UnlockOSThread()
	}
	r := rand.New(rand.NewPCG(*seed, uint64(w)))
	base := uint64(w) * slot
	for {
		select {
		case <-stop:
			return
		default:
		}
		p := s.acquire(r)
		s.oneBatch(r, p, base, w, thread)
		p.release()
	}
}

func (s *soak) oneBatch(r *rand.Rand, p *peer, base uint64, w int, thread bool) {
	kind := r.IntN(3) // 0: hub writes, 1: hub reads, 2: peer writes into the hub
	lay := layout(r, base)
	reqs := make([]engine.Request, len(lay))
	sizes := make([]uint64, len(lay))
	from, peerMem := s.hub, p.mem.Bytes()
	var local, remote core.MemoryDesc
	var op core.Op
	var srcBuf, dstBuf []byte
	switch kind {
	case 0:
		op, local, remote, srcBuf, dstBuf = core.OpWrite, s.srcD, p.desc, s.hubSrc.Bytes(), peerMem
	case 1:
		op, local, remote, srcBuf, dstBuf = core.OpRead, s.dstD, p.desc, peerMem, s.hubDst.Bytes()
	default:
		from = p.e
		op, local, remote, srcBuf, dstBuf = core.OpWrite, p.desc, s.inbox, peerMem, s.hubInbox.Bytes()
	}
	for i, rs := range lay {
		for _, rg := range rs {
			fill(r, srcBuf[rg.LocalOffset:rg.LocalOffset+rg.Size])
			sizes[i] += rg.Size
		}
		// The engine owns the ranges it is given: pass a copy.
		reqs[i] = engine.Request{Local: local, Remote: remote, Ranges: append([]core.Range(nil), rs...), UID: from.AllocateTransferUID()}
	}
	sts := from.Submit(op, reqs)
	if thread {
		core.WaitAllThread(sts, *timeout+5*time.Second)
	} else {
		core.WaitAll(sts, *timeout+5*time.Second)
	}
	p.mu.Lock()
	abrupt := p.abrupt
	p.mu.Unlock()
	for i, st := range sts {
		c := st.Wait(*timeout + 5*time.Second)
		switch {
		case c == core.StatusSuccess:
			for _, rg := range lay[i] {
				// For reads the peer's bytes are the source at the
				// remote offset; for writes the destination is remote.
				var a, b []byte
				if op == core.OpRead {
					a, b = srcBuf[rg.RemoteOffset:rg.RemoteOffset+rg.Size], dstBuf[rg.LocalOffset:rg.LocalOffset+rg.Size]
				} else {
					a, b = srcBuf[rg.LocalOffset:rg.LocalOffset+rg.Size], dstBuf[rg.RemoteOffset:rg.RemoteOffset+rg.Size]
				}
				if !equal(a, b) {
					s.errorf("worker %d: %s: %d bytes at %d differ", w, direction(kind, p), rg.Size, rg.RemoteOffset)
				}
			}
			if kind == 2 {
				in, ok := s.hub.PopInboundTransferStatus(p.e.Key(), reqs[i].UID)
				if !ok || in.Code != core.StatusSuccess {
					s.errorf("worker %d: hub's inbound status of %s uid %d: %v %s", w, p.e.Key(), reqs[i].UID, in.Code, in.Message)
				}
			}
			s.ok.Add(1)
			s.bytes.Add(int64(sizes[i]))
		case c.Failed() && abrupt:
			s.expected.Add(1)
			if kind == 2 {
				s.hub.PopInboundTransferStatus(p.e.Key(), reqs[i].UID)
			}
		case c.Failed():
			s.errorf("worker %d: %s with %s failed: %s", w, op, p.e.Key(), st.Message())
		default:
			s.errorf("worker %d: %s with %s still %s after its timeout", w, op, p.e.Key(), c)
		}
	}
}

// direction names a batch's kind for the error list.
func direction(kind int, p *peer) string {
	switch kind {
	case 0:
		return "hub writes to " + p.e.Key()
	case 1:
		return "hub reads from " + p.e.Key()
	}
	return p.e.Key() + " writes into the hub"
}
