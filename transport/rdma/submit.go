package rdma

import (
	"fmt"

	"github.com/mori-go/mori-go/core"
	"github.com/mori-go/mori-go/verbs"
)

// Submit starts a transfer: it finds the remote keys (from the remote
// descriptor, a cache, or an MR_QUERY to the peer for memory registered
// before its backend existed) and the lane of the local memory's NIC
// (connecting it first if it is new), splits the ranges into work
// requests, spreads them over the lane's QPs and queues them. It never
// blocks on the network: a query or a connection runs on a goroutine.
func (b *Backend) Submit(t *core.Transfer) {
	b.mu.Lock()
	p, closed := b.peers[t.Peer], b.closed
	b.mu.Unlock()
	switch {
	case closed:
		t.Fail(core.ErrBadState, "rdma backend closed")
		return
	case p == nil:
		t.Fail(core.ErrNotFound, "remote engine %q is not registered with the RDMA backend", t.Peer)
		return
	}
	rm := regionOf(b, t.Local)
	if rm == nil {
		t.Fail(core.ErrBadState, "local memory %d is not registered with the RDMA backend", t.Local.ID)
		return
	}
	n, err := b.laneNIC(rm.home, p.remote)
	if err != nil {
		t.Fail(core.ErrRDMAOp, "rdma: transfer to %q: %v", t.Peer, err)
		return
	}
	keys, known, err := knownKeys(p, t.Remote)
	if err != nil {
		t.Fail(core.ErrInvalidArgs, "remote %s: %v", t.Remote.String(), err)
		return
	}
	if l := p.readyLane(n); known && l != nil {
		b.post(l, t, keys, rm)
		return
	}
	if !b.goTracked(func() {
		if !known {
			if keys, err = b.queryMR(p, t.Remote); err != nil {
				t.Fail(core.CodeOf(err), "remote %s has no RDMA key in its descriptor and asking its engine failed: %v", t.Remote.String(), err)
				return
			}
		}
		l, err := b.laneFor(p, n)
		if err != nil {
			t.Fail(core.CodeOf(err), "%v", err)
			return
		}
		b.post(l, t, keys, rm)
	}) {
		t.Fail(core.ErrBadState, "rdma backend closed")
	}
}

// knownKeys returns the remote memory's keys from its descriptor or from
// an earlier MR_QUERY; known is false when the owner must be asked.
func knownKeys(p *peer, m core.MemoryDesc) (keys []RemoteKey, known bool, err error) {
	if blob := m.Blob(core.BackendRDMA); blob != nil {
		keys, err = decodeMemoryBlob(blob)
		return keys, err == nil, err
	}
	keys, known = p.cachedMR(m.ID, m.Size)
	return keys, known, nil
}

func (p *peer) cachedMR(id uint32, size uint64) ([]RemoteKey, bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	e, ok := p.mrs[id]
	if !ok || e.size != size {
		return nil, false
	}
	return e.keys, true
}

// queryMR asks the owner of remote memory for its keys (MR_QUERY).
func (b *Backend) queryMR(p *peer, m core.MemoryDesc) ([]RemoteKey, error) {
	reply, err := b.call(p.desc, &message{Type: msgMRQuery, MemID: m.ID, Token: m.Token, Size: m.Size}, msgMRInfo)
	if err != nil {
		return nil, err
	}
	keys, err := decodeMemoryBlob(reply.Blob)
	if err != nil {
		return nil, core.Errorf(core.ErrRemote, "%w", err)
	}
	p.mu.Lock()
	if len(p.mrs) >= 1<<16 {
		clear(p.mrs)
	}
	p.mrs[m.ID] = remoteMR{size: m.Size, keys: keys}
	p.mu.Unlock()
	return keys, nil
}

// piece is one work request's worth of a range.
type piece struct{ local, remote, size uint64 }

// maxWR is the largest work request: the configured size, capped by every
// port's max_msg_sz.
func (b *Backend) maxWR() uint64 {
	m := b.s.MaxWRSize
	for _, n := range b.nics {
		if n.attr.MaxMsgSize > 0 {
			m = min(m, uint64(n.attr.MaxMsgSize))
		}
	}
	return max(m, 1)
}

// post splits a transfer into parts, one per QP of the lane it uses, and
// queues them.
func (b *Backend) post(l *lane, t *core.Transfer, keys []RemoteKey, rm *regionMRs) {
	conns, lastErr := usableConns(l.conns)
	if len(conns) == 0 {
		t.Fail(core.ErrRDMAOp, "no usable queue pair to %q on %s (reconnecting after: %v)", t.Peer, l.nic.name, lastErr)
		return
	}
	shares := spread(cutPieces(t.Ranges, b.maxWR()), conns, t.UID)
	x := &xfer{t: t, p: conns[0].peerRef, parts: len(shares)}
	parts := make([]*part, 0, len(shares))
	for _, sh := range shares {
		c := sh.c
		if int(c.remote.NIC) >= len(keys) {
			t.Fail(core.ErrInvalidArgs, "remote %s has keys for %d NICs, the peer's qp %d is on its NIC %d", t.Remote.String(), len(keys), c.idx, c.remote.NIC)
			return
		}
		mr := rm.mrs[c.nic.idx]
		if mr == nil {
			t.Fail(core.ErrBadState, "local memory %d is not registered on %s, which had failed when it was registered", t.Local.ID, c.nic.name)
			return
		}
		parts = append(parts, b.newPart(x, sh, keys[c.remote.NIC], mr.LKey()))
	}
	used := 0
	for range parts {
		if err := t.Local.Use(); err != nil {
			for ; used > 0; used-- {
				t.Local.Release()
			}
			t.FailErr(err)
			return
		}
		used++
	}
	t.Begin(len(parts))
	for i, pt := range parts {
		shares[i].c.enqueue(pt)
	}
}

// usableConns returns the peer's connected QPs, starts rebuilding the
// others, and returns the last error of a broken one.
func usableConns(lane []*conn) ([]*conn, error) {
	var conns []*conn
	var lastErr error
	for _, c := range lane {
		if c.isReady() {
			conns = append(conns, c)
			continue
		}
		c.mu.Lock()
		if lastErr == nil {
			lastErr = c.lastErr
		}
		c.mu.Unlock()
		c.retry()
	}
	return conns, lastErr
}

// cutPieces cuts ranges into work requests of at most limit bytes.
func cutPieces(ranges []core.Range, limit uint64) []piece {
	var pieces []piece
	for _, r := range ranges {
		for off := uint64(0); off < r.Size; off += limit {
			pieces = append(pieces, piece{local: r.LocalOffset + off, remote: r.RemoteOffset + off, size: min(limit, r.Size-off)})
		}
	}
	return pieces
}

// share is the pieces one QP carries.
type share struct {
	c      *conn
	pieces []piece
}

// spread gives pieces to QPs: few pieces go one to a QP, starting at a QP
// chosen by uid so that single-range transfers spread; many pieces go in
// contiguous slices.
func spread(pieces []piece, conns []*conn, uid uint64) []share {
	var shares []share
	if len(pieces) <= len(conns) {
		start := int(uid % uint64(len(conns)))
		for i, pc := range pieces {
			shares = append(shares, share{c: conns[(start+i)%len(conns)], pieces: []piece{pc}})
		}
		return shares
	}
	per := (len(pieces) + len(conns) - 1) / len(conns)
	for i := 0; i < len(pieces); i += per {
		shares = append(shares, share{c: conns[len(shares)], pieces: pieces[i:min(i+per, len(pieces))]})
	}
	return shares
}

// newPart builds the work requests of one share: a WRITE or READ per piece
// and, with notification on, the SEND that tells the target.
func (b *Backend) newPart(x *xfer, sh share, key RemoteKey, lkey uint32) *part {
	t := x.t
	pt := &part{x: x, notify: b.s.notify}
	n := len(sh.pieces)
	if pt.notify {
		n++
	}
	pt.wrs = make([]verbs.SendWR, 0, n)
	pt.sges = make([]verbs.SGE, n)
	opcode := verbs.OpRDMAWrite
	if t.Op == core.OpRead {
		opcode = verbs.OpRDMARead
	}
	for i, pc := range sh.pieces {
		pt.sges[i] = verbs.SGE{Addr: uint64(t.Local.Addr) + pc.local, Length: uint32(pc.size), LKey: lkey}
		pt.wrs = append(pt.wrs, verbs.SendWR{Opcode: opcode, SGL: pt.sges[i : i+1], RemoteAddr: key.IOVA + pc.remote, RKey: key.RKey})
	}
	if pt.notify {
		// Sent after the data on the same QP: RC delivers in order, so
		// the target sees it after the writes have landed. After reads,
		// the fence holds it until they have completed.
		w := verbs.SendWR{Opcode: verbs.OpSend}
		if t.Op == core.OpRead {
			w.Flags |= verbs.SendFence
		}
		pt.wrs = append(pt.wrs, w)
	}
	return pt
}

// abort tells the target, once per transfer and without waiting, that a
// transfer it was notified of will not complete, so that its inbound
// status fails rather than stays in progress.
func (b *Backend) abort(x *xfer, err error) {
	if !b.s.notify || x.p == nil || !x.aborted.CompareAndSwap(false, true) {
		return
	}
	p := x.p
	p.mu.Lock()
	if len(p.aborts) < maxAborts*4 {
		p.aborts = append(p.aborts, abortEntry{UID: x.t.UID, Instance: x.t.Instance, Parts: uint32(x.parts)})
		if p.abortReason == "" {
			p.abortReason = err.Error()
		}
	}
	start := !p.flushing && !p.closed
	p.flushing = p.flushing || start
	p.mu.Unlock()
	if start && !b.goTracked(func() { b.flushAborts(p) }) {
		p.mu.Lock()
		p.flushing = false
		p.mu.Unlock()
	}
}

func (b *Backend) flushAborts(p *peer) {
	for {
		p.mu.Lock()
		n := min(len(p.aborts), maxAborts)
		batch := append([]abortEntry(nil), p.aborts[:n]...)
		p.aborts = p.aborts[n:]
		reason := p.abortReason
		if len(p.aborts) == 0 {
			p.abortReason = ""
		}
		if n == 0 {
			p.flushing = false
			p.mu.Unlock()
			return
		}
		p.mu.Unlock()
		if len(reason) > maxReason {
			reason = reason[:maxReason]
		}
		if _, err := b.call(p.desc, &message{Type: msgAbort, Aborts: batch, Reason: reason}, msgOK); err != nil {
			b.log.Debug("rdma: telling the target of failed transfers", "peer", p.key, "transfers", n, "err", err)
		}
	}
}

func (b *Backend) String() string {
	return fmt.Sprintf("rdma backend (%d nics, %s)", len(b.nics), b.s)
}
