package tcp

import (
	"fmt"
	"slices"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/mori-go/mori-go/core"
)

// One batch mixing small and large writes and reads, to two peers (in
// turn, or all of one then all of the other: consecutive transfers to one
// peer share a stream), with more frames than a stream takes quietly:
// every byte where it belongs, every status success, nothing outside the
// ranges touched.
func TestSubmitBatchMixedSizesAndPeers(t *testing.T) {
	for _, grouped := range []bool{false, true} {
		t.Run(map[bool]string{false: "peers in turn", true: "peers grouped"}[grouped], func(t *testing.T) {
			testSubmitBatch(t, grouped)
		})
	}
}

func testSubmitBatch(t *testing.T, grouped bool) {
	const n, slot = 100, 80 << 10 // transfers per peer, each in its own slot
	ini := newNode(t, "batch-initiator", nil, nil)
	src := newGuarded(t, ini.reg, 2*n*slot)
	back := newGuarded(t, ini.reg, 2*n*slot)
	src.fill(3)
	var targets []*node
	var dsts []*guarded
	for i := range 2 {
		tn := newNode(t, fmt.Sprintf("batch-target-%d", i), nil, nil)
		require.NoError(t, ini.b.AddPeer(tn.desc()))
		g := newGuarded(t, tn.reg, n*slot)
		g.fill(byte(10 + i))
		targets, dsts = append(targets, tn), append(dsts, g)
	}
	// n transfers per peer, in the order chosen: sizes from 1 byte to 40
	// KiB, every tenth 64 KiB+1 (more than an inline write).
	var ts []*core.Transfer
	var sts []*core.Status
	uid := uint64(0)
	var order [][2]int // (k, peer)
	for k := range n {
		for p := range 2 {
			order = append(order, [2]int{k, p})
		}
	}
	if grouped {
		slices.SortStableFunc(order, func(a, b [2]int) int { return a[1] - b[1] })
	}
	for _, kp := range order {
		k, p := kp[0], kp[1]
		size := uint64(1 + (k*997)%(40<<10))
		if k%10 == 0 {
			size = 64<<10 + 1
		}
		slotOff := uint64(k) * slot
		local := uint64(p)*n*slot + slotOff
		uid++
		st := core.NewStatus()
		sts = append(sts, st)
		ts = append(ts, &core.Transfer{
			Op: core.OpWrite, UID: uid, Instance: uid, Peer: targets[p].key, Local: src.r, Status: st, Bytes: size,
			Ranges: []core.Range{{LocalOffset: local, RemoteOffset: slotOff, Size: size}},
			Remote: core.MemoryDesc{EngineKey: targets[p].key, ID: dsts[p].r.ID, Token: dsts[p].r.Token(), Location: core.LocationCPU, Size: dsts[p].r.Size},
		})
	}
	ini.b.SubmitBatch(ts)
	for i, st := range sts {
		require.Equal(t, core.StatusSuccess, st.Wait(ioDeadline), "write %d: %s", i, st.Message())
	}
	for p := range 2 {
		want := dsts[p].snapshot()
		for _, tr := range ts {
			if tr.Peer != targets[p].key {
				continue
			}
			r := tr.Ranges[0]
			copy(want[r.RemoteOffset:r.RemoteOffset+r.Size], src.mem()[r.LocalOffset:r.LocalOffset+r.Size])
		}
		require.Equal(t, want, dsts[p].mem(), "peer %d: the batch's bytes", p)
		dsts[p].checkGuards(t)
	}
	// Read everything back in one batch of reads.
	ts, sts = ts[:0], sts[:0]
	for p := range 2 {
		uid++
		st := core.NewStatus()
		sts = append(sts, st)
		off := uint64(p) * n * slot
		ts = append(ts, &core.Transfer{
			Op: core.OpRead, UID: uid, Instance: uid, Peer: targets[p].key, Local: back.r, Status: st, Bytes: dsts[p].r.Size,
			Ranges: []core.Range{{LocalOffset: off, Size: dsts[p].r.Size}},
			Remote: core.MemoryDesc{EngineKey: targets[p].key, ID: dsts[p].r.ID, Token: dsts[p].r.Token(), Location: core.LocationCPU, Size: dsts[p].r.Size},
		})
	}
	ini.b.SubmitBatch(ts)
	for p, st := range sts {
		require.Equal(t, core.StatusSuccess, st.Wait(ioDeadline), st.Message())
		off := p * n * slot
		require.Equal(t, dsts[p].mem(), back.mem()[off:off+len(dsts[p].mem())])
	}
	src.checkGuards(t)
	back.checkGuards(t)
}
