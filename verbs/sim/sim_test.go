package sim_test

import (
	"errors"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/mori-go/mori-go/internal/hostmem"
	"github.com/mori-go/mori-go/verbs"
	"github.com/mori-go/mori-go/verbs/sim"
)

// end is one side of a test connection.
type end struct {
	dev *sim.Device
	ctx verbs.Context
	pd  verbs.PD
	cq  verbs.CQ
	qp  verbs.QP
	gid verbs.GIDEntry
	mem *hostmem.Buffer
	mr  verbs.MR
	psn uint32
}

const access = verbs.AccessLocalWrite | verbs.AccessRemoteWrite | verbs.AccessRemoteRead

func newEnd(t *testing.T, h *sim.Host, cqe, sq, rq int, ch verbs.CompChannel) *end {
	t.Helper()
	e := &end{dev: h.Device("mlx5_0")}
	var err error
	e.ctx, err = h.Open("mlx5_0")
	require.NoError(t, err)
	e.pd, err = e.ctx.AllocPD()
	require.NoError(t, err)
	e.cq, err = e.ctx.CreateCQ(cqe, ch, 0)
	require.NoError(t, err)
	e.qp, err = e.pd.CreateQP(verbs.QPInitAttr{SendCQ: e.cq, RecvCQ: e.cq, MaxSendWR: sq, MaxRecvWR: rq, MaxSendSGE: 2, MaxRecvSGE: 1, MaxInlineData: 64})
	require.NoError(t, err)
	e.gid, err = e.ctx.QueryGID(1, 3)
	require.NoError(t, err)
	e.mem, err = hostmem.Alloc(1 << 16)
	require.NoError(t, err)
	e.mr, err = e.pd.RegMR(e.mem.Addr(), 1<<16, access)
	require.NoError(t, err)
	e.psn = uint32(e.qp.Num()) * 3
	require.NoError(t, e.qp.Modify(&verbs.QPAttr{State: verbs.QPInit, Port: 1, Access: access},
		verbs.QPAttrState|verbs.QPAttrPKeyIndex|verbs.QPAttrPort|verbs.QPAttrAccessFlags))
	t.Cleanup(func() {
		e.qp.Close()
		e.cq.Close()
		e.mr.Close()
		e.pd.Close()
		e.ctx.Close()
		e.mem.Free()
	})
	return e
}

const rtrMask = verbs.QPAttrState | verbs.QPAttrAV | verbs.QPAttrPathMTU | verbs.QPAttrDestQPN | verbs.QPAttrRQPSN | verbs.QPAttrMaxDestRdAtom | verbs.QPAttrMinRNRTimer
const rtsMask = verbs.QPAttrState | verbs.QPAttrTimeout | verbs.QPAttrRetryCnt | verbs.QPAttrRNRRetry | verbs.QPAttrSQPSN | verbs.QPAttrMaxQPRdAtomic

// connectTo moves e to RTS against a remote QP at gid/qpn/psn.
func (e *end) connectTo(t *testing.T, gid verbs.GID, qpn, psn uint32, rnrRetry uint8) {
	t.Helper()
	require.NoError(t, e.qp.Modify(&verbs.QPAttr{State: verbs.QPRTR, PathMTU: verbs.MTU4096, DestQPN: qpn, RQPSN: psn,
		MaxDestRdAtom: 1, MinRNRTimer: 12, AH: verbs.AHAttr{Port: 1, IsGlobal: true, DGID: gid, SGIDIndex: 3, HopLimit: 64}}, rtrMask))
	require.NoError(t, e.qp.Modify(&verbs.QPAttr{State: verbs.QPRTS, Timeout: 14, RetryCnt: 7, RNRRetry: rnrRetry, SQPSN: e.psn, MaxRdAtomic: 1}, rtsMask))
}

func pair(t *testing.T, f *sim.Fabric, cqe int) (*end, *end) {
	a := newEnd(t, f.AddHost("a", sim.NIC{Name: "mlx5_0"}), cqe, 64, 64, nil)
	b := newEnd(t, f.AddHost("b", sim.NIC{Name: "mlx5_0"}), cqe, 64, 64, nil)
	a.connectTo(t, b.gid.GID, b.qp.Num(), b.psn, 7)
	b.connectTo(t, a.gid.GID, a.qp.Num(), a.psn, 7)
	return a, b
}

// poll waits for n completions.
func poll(t *testing.T, cq verbs.CQ, n int) []verbs.WorkCompletion {
	t.Helper()
	var out []verbs.WorkCompletion
	buf := make([]verbs.WorkCompletion, 16)
	require.Eventually(t, func() bool {
		k, err := cq.Poll(buf)
		require.NoError(t, err)
		out = append(out, buf[:k]...)
		return len(out) >= n
	}, 10*time.Second, 100*time.Microsecond, "got %d of %d completions", len(out), n)
	return out
}

func sge(e *end, off uint64, n uint32) []verbs.SGE {
	return []verbs.SGE{{Addr: uint64(e.mem.Addr()) + off, Length: n, LKey: e.mr.LKey()}}
}

func writeWR(id uint64, a, b *end, off uint64, n uint32, flags verbs.SendFlags) verbs.SendWR {
	return verbs.SendWR{ID: id, Opcode: verbs.OpRDMAWrite, Flags: flags, SGL: sge(a, off, n), RemoteAddr: uint64(b.mem.Addr()) + off, RKey: b.mr.RKey()}
}

func TestWritesRunInOrderAndOnlySignaledOnesComplete(t *testing.T) {
	f := sim.NewFabric(sim.Config{})
	a, b := pair(t, f, 64)
	var wrs []verbs.SendWR
	for i := 0; i < 10; i++ {
		a.mem.Bytes()[i] = byte(i + 1)
		// Each write covers byte 0: in-order execution leaves the last one.
		wrs = append(wrs, verbs.SendWR{ID: uint64(i), Opcode: verbs.OpRDMAWrite, SGL: sge(a, uint64(i), 1), RemoteAddr: uint64(b.mem.Addr()), RKey: b.mr.RKey()})
	}
	wrs[9].Flags = verbs.SendSignaled
	require.NoError(t, a.qp.PostSend(wrs))
	wc := poll(t, a.cq, 1)
	require.Equal(t, uint64(9), wc[0].ID)
	require.Equal(t, verbs.WCSuccess, wc[0].Status)
	require.Equal(t, verbs.WCRDMAWrite, wc[0].Opcode)
	require.Equal(t, byte(10), b.mem.Bytes()[0])
	n, err := a.cq.Poll(make([]verbs.WorkCompletion, 4))
	require.NoError(t, err)
	require.Zero(t, n, "unsignaled work requests complete silently")
}

func TestReadCopiesRemoteMemory(t *testing.T) {
	f := sim.NewFabric(sim.Config{})
	a, b := pair(t, f, 64)
	copy(b.mem.Bytes()[100:], "remote bytes")
	require.NoError(t, a.qp.PostSend([]verbs.SendWR{{ID: 1, Opcode: verbs.OpRDMARead, Flags: verbs.SendSignaled, SGL: sge(a, 0, 12), RemoteAddr: uint64(b.mem.Addr()) + 100, RKey: b.mr.RKey()}}))
	wc := poll(t, a.cq, 1)
	require.Equal(t, verbs.WCSuccess, wc[0].Status)
	require.Equal(t, verbs.WCRDMARead, wc[0].Opcode)
	require.Equal(t, uint32(12), wc[0].ByteLen)
	require.Equal(t, "remote bytes", string(a.mem.Bytes()[:12]))
}

func TestWriteWithImmAndSendConsumeReceives(t *testing.T) {
	f := sim.NewFabric(sim.Config{})
	a, b := pair(t, f, 64)
	require.NoError(t, b.qp.PostRecv([]verbs.RecvWR{{ID: 70, SGL: sge(b, 4096, 64)}, {ID: 71, SGL: sge(b, 8192, 64)}}))
	copy(a.mem.Bytes(), "payload!")
	require.NoError(t, a.qp.PostSend([]verbs.SendWR{
		{ID: 1, Opcode: verbs.OpRDMAWriteWithImm, Imm: 0xdeadbeef, SGL: sge(a, 0, 8), RemoteAddr: uint64(b.mem.Addr()) + 16, RKey: b.mr.RKey()},
		{ID: 2, Opcode: verbs.OpSend, Flags: verbs.SendSignaled | verbs.SendInline, SGL: sge(a, 0, 8)},
	}))
	poll(t, a.cq, 1)
	wc := poll(t, b.cq, 2)
	require.Equal(t, uint64(70), wc[0].ID)
	require.Equal(t, verbs.WCRecvRDMAWithIm, wc[0].Opcode)
	require.Equal(t, uint32(0xdeadbeef), wc[0].Imm)
	require.NotZero(t, wc[0].Flags&verbs.WCFlagWithImm)
	require.Equal(t, "payload!", string(b.mem.Bytes()[16:24]))
	require.Equal(t, uint64(71), wc[1].ID)
	require.Equal(t, verbs.WCRecv, wc[1].Opcode)
	require.Equal(t, uint32(8), wc[1].ByteLen)
	require.Equal(t, "payload!", string(b.mem.Bytes()[8192:8200]))
}

func TestBadRKeyFailsBothQPsAndFlushesTheRest(t *testing.T) {
	f := sim.NewFabric(sim.Config{})
	a, b := pair(t, f, 64)
	require.NoError(t, b.qp.PostRecv([]verbs.RecvWR{{ID: 5, SGL: sge(b, 0, 64)}}))
	bad := writeWR(1, a, b, 0, 8, verbs.SendSignaled)
	bad.RKey++
	require.NoError(t, a.qp.PostSend([]verbs.SendWR{bad, writeWR(2, a, b, 0, 8, 0), writeWR(3, a, b, 0, 8, verbs.SendSignaled)}))
	wc := poll(t, a.cq, 3)
	require.Equal(t, verbs.WCRemAccessErr, wc[0].Status)
	// Flushed work completes whether signaled or not.
	require.Equal(t, verbs.WCWRFlushErr, wc[1].Status)
	require.Equal(t, uint64(2), wc[1].ID)
	require.Equal(t, verbs.WCWRFlushErr, wc[2].Status)
	st, err := a.qp.State()
	require.NoError(t, err)
	require.Equal(t, verbs.QPError, st)
	// The responder went to the error state too; its receive is flushed.
	st, _ = b.qp.State()
	require.Equal(t, verbs.QPError, st)
	rwc := poll(t, b.cq, 1)
	require.Equal(t, verbs.WCWRFlushErr, rwc[0].Status)
	require.Equal(t, uint64(5), rwc[0].ID)
	// Work posted to a QP in error is flushed too.
	require.NoError(t, a.qp.PostSend([]verbs.SendWR{writeWR(4, a, b, 0, 8, 0)}))
	require.Equal(t, verbs.WCWRFlushErr, poll(t, a.cq, 1)[0].Status)
}

func TestBoundsAndKeysAreChecked(t *testing.T) {
	f := sim.NewFabric(sim.Config{})
	t.Run("past the remote region", func(t *testing.T) {
		a, b := pair(t, f, 64)
		w := writeWR(1, a, b, 0, 64, verbs.SendSignaled)
		w.RemoteAddr = uint64(b.mem.Addr()) + 1<<16 - 32
		require.NoError(t, a.qp.PostSend([]verbs.SendWR{w}))
		require.Equal(t, verbs.WCRemAccessErr, poll(t, a.cq, 1)[0].Status)
	})
	t.Run("bad lkey", func(t *testing.T) {
		a, b := pair(t, f, 64)
		w := writeWR(1, a, b, 0, 64, verbs.SendSignaled)
		w.SGL[0].LKey += 7
		require.NoError(t, a.qp.PostSend([]verbs.SendWR{w}))
		require.Equal(t, verbs.WCLocProtErr, poll(t, a.cq, 1)[0].Status)
	})
	t.Run("deregistered remote region", func(t *testing.T) {
		a, b := pair(t, f, 64)
		mr, err := b.pd.RegMR(b.mem.Addr(), 4096, access)
		require.NoError(t, err)
		require.NoError(t, mr.Close())
		w := writeWR(1, a, b, 0, 64, verbs.SendSignaled)
		w.RKey = mr.RKey()
		require.NoError(t, a.qp.PostSend([]verbs.SendWR{w}))
		require.Equal(t, verbs.WCRemAccessErr, poll(t, a.cq, 1)[0].Status)
	})
}

func TestQPTransitionsAreChecked(t *testing.T) {
	f := sim.NewFabric(sim.Config{})
	h := f.AddHost("a", sim.NIC{Name: "mlx5_0"})
	e := newEnd(t, h, 16, 4, 4, nil)
	// Posting to a QP that is not RTS is refused.
	var pe *verbs.PostError
	err := e.qp.PostSend([]verbs.SendWR{{Opcode: verbs.OpSend}})
	require.ErrorAs(t, err, &pe)
	require.True(t, errors.Is(err, syscall.EINVAL))
	// INIT to RTS skips RTR.
	require.Error(t, e.qp.Modify(&verbs.QPAttr{State: verbs.QPRTS}, rtsMask))
	// RTR needs its attributes.
	require.ErrorContains(t, e.qp.Modify(&verbs.QPAttr{State: verbs.QPRTR}, verbs.QPAttrState), "lacks")
	// RoCE needs a global route.
	require.ErrorContains(t, e.qp.Modify(&verbs.QPAttr{State: verbs.QPRTR, PathMTU: verbs.MTU1024, DestQPN: 9, AH: verbs.AHAttr{DLID: 3}}, rtrMask), "global route")
	// A path MTU above the port's is refused.
	require.ErrorContains(t, e.qp.Modify(&verbs.QPAttr{State: verbs.QPRTR, PathMTU: 6, DestQPN: 9, AH: verbs.AHAttr{IsGlobal: true, DGID: e.gid.GID, SGIDIndex: 3}}, rtrMask), "path MTU")
	// Reset always works, and the QP starts over.
	require.NoError(t, e.qp.Modify(&verbs.QPAttr{State: verbs.QPReset}, verbs.QPAttrState))
	st, _ := e.qp.State()
	require.Equal(t, verbs.QPReset, st)
}

func TestSendQueueFullIsRefused(t *testing.T) {
	f := sim.NewFabric(sim.Config{})
	a := newEnd(t, f.AddHost("a", sim.NIC{Name: "mlx5_0"}), 64, 2, 2, nil)
	b := newEnd(t, f.AddHost("b", sim.NIC{Name: "mlx5_0"}), 64, 2, 2, nil)
	a.connectTo(t, b.gid.GID, b.qp.Num(), b.psn, 7)
	b.connectTo(t, a.gid.GID, a.qp.Num(), a.psn, 7)
	f.SetLatency(time.Hour) // the first work request never finishes while the test runs
	err := a.qp.PostSend([]verbs.SendWR{writeWR(1, a, b, 0, 8, 0), writeWR(2, a, b, 0, 8, 0), writeWR(3, a, b, 0, 8, 0)})
	var pe *verbs.PostError
	require.ErrorAs(t, err, &pe)
	require.Equal(t, 2, pe.Index)
	require.True(t, errors.Is(err, syscall.ENOMEM))
}

func TestSendWithoutReceiveExceedsRNRRetries(t *testing.T) {
	f := sim.NewFabric(sim.Config{})
	a := newEnd(t, f.AddHost("a", sim.NIC{Name: "mlx5_0"}), 64, 8, 8, nil)
	b := newEnd(t, f.AddHost("b", sim.NIC{Name: "mlx5_0"}), 64, 8, 8, nil)
	a.connectTo(t, b.gid.GID, b.qp.Num(), b.psn, 2)
	b.connectTo(t, a.gid.GID, a.qp.Num(), a.psn, 2)
	require.NoError(t, a.qp.PostSend([]verbs.SendWR{{ID: 1, Opcode: verbs.OpSend, Flags: verbs.SendSignaled, SGL: sge(a, 0, 8)}}))
	require.Equal(t, verbs.WCRNRRetryExcErr, poll(t, a.cq, 1)[0].Status)
}

func TestUnreachableOrMisconnectedPeerExceedsRetries(t *testing.T) {
	f := sim.NewFabric(sim.Config{RetryInterval: 100 * time.Microsecond})
	t.Run("unknown gid", func(t *testing.T) {
		a := newEnd(t, f.AddHost("a", sim.NIC{Name: "mlx5_0"}), 64, 8, 8, nil)
		a.connectTo(t, a.gid.GID, 0x7777, 1, 7) // nobody has QP 0x7777
		require.NoError(t, a.qp.PostSend([]verbs.SendWR{{ID: 1, Opcode: verbs.OpSend, Flags: verbs.SendSignaled | verbs.SendInline, SGL: sge(a, 0, 8)}}))
		require.Equal(t, verbs.WCRetryExcErr, poll(t, a.cq, 1)[0].Status)
	})
	t.Run("psn mismatch", func(t *testing.T) {
		a := newEnd(t, f.AddHost("c", sim.NIC{Name: "mlx5_0"}), 64, 8, 8, nil)
		b := newEnd(t, f.AddHost("d", sim.NIC{Name: "mlx5_0"}), 64, 8, 8, nil)
		a.connectTo(t, b.gid.GID, b.qp.Num(), b.psn, 7)
		b.connectTo(t, a.gid.GID, a.qp.Num(), a.psn+1, 7) // expects another PSN
		require.NoError(t, a.qp.PostSend([]verbs.SendWR{writeWR(1, a, b, 0, 8, verbs.SendSignaled)}))
		require.Equal(t, verbs.WCRetryExcErr, poll(t, a.cq, 1)[0].Status)
	})
	t.Run("partition then heal", func(t *testing.T) {
		g := sim.NewFabric(sim.Config{RetryInterval: 100 * time.Microsecond})
		a, b := pair(t, g, 64)
		g.Partition(a.dev, b.dev)
		require.NoError(t, a.qp.PostSend([]verbs.SendWR{writeWR(1, a, b, 0, 8, verbs.SendSignaled)}))
		require.Equal(t, verbs.WCRetryExcErr, poll(t, a.cq, 1)[0].Status)
	})
	t.Run("few lost packets are retransmitted", func(t *testing.T) {
		g := sim.NewFabric(sim.Config{RetryInterval: 100 * time.Microsecond})
		a, b := pair(t, g, 64)
		g.LosePackets(a.dev, 6)
		require.NoError(t, a.qp.PostSend([]verbs.SendWR{writeWR(1, a, b, 0, 8, verbs.SendSignaled)}))
		require.Equal(t, verbs.WCSuccess, poll(t, a.cq, 1)[0].Status)
	})
}

func TestCQOverflowRaisesAnAsyncEventAndFailsTheQP(t *testing.T) {
	f := sim.NewFabric(sim.Config{})
	a, b := pair(t, f, 2)
	f.FreezeCQs()
	var wrs []verbs.SendWR
	for i := 0; i < 4; i++ {
		wrs = append(wrs, writeWR(uint64(i), a, b, 0, 8, verbs.SendSignaled))
	}
	require.NoError(t, a.qp.PostSend(wrs))
	ev, ok, err := a.ctx.WaitAsyncEvent(10 * time.Second)
	require.NoError(t, err)
	require.True(t, ok)
	require.Equal(t, verbs.EventCQErr, ev.Type)
	require.Equal(t, a.cq, ev.CQ)
	f.ThawCQs()
	_, err = a.cq.Poll(make([]verbs.WorkCompletion, 4))
	require.Error(t, err)
	require.Eventually(t, func() bool {
		st, _ := a.qp.State()
		return st == verbs.QPError
	}, 10*time.Second, time.Millisecond)
}

func TestFailQPRaisesQPFatal(t *testing.T) {
	f := sim.NewFabric(sim.Config{})
	a, _ := pair(t, f, 16)
	require.True(t, f.FailQP(a.dev, a.qp.Num()))
	ev, ok, err := a.ctx.WaitAsyncEvent(10 * time.Second)
	require.NoError(t, err)
	require.True(t, ok)
	require.Equal(t, verbs.EventQPFatal, ev.Type)
	require.Equal(t, a.qp.Num(), ev.QPNum)
}

func TestCompletionChannelSignalsArmedCQs(t *testing.T) {
	f := sim.NewFabric(sim.Config{})
	ha, hb := f.AddHost("a", sim.NIC{Name: "mlx5_0"}), f.AddHost("b", sim.NIC{Name: "mlx5_0"})
	actx, err := ha.Open("mlx5_0")
	require.NoError(t, err)
	ch, err := actx.CreateCompChannel()
	require.NoError(t, err)
	a := newEnd(t, ha, 16, 8, 8, ch)
	b := newEnd(t, hb, 16, 8, 8, nil)
	a.connectTo(t, b.gid.GID, b.qp.Num(), b.psn, 7)
	b.connectTo(t, a.gid.GID, a.qp.Num(), a.psn, 7)
	got, err := ch.Wait(time.Millisecond)
	require.NoError(t, err)
	require.Nil(t, got, "no event before arming and completing")
	require.NoError(t, a.cq.ReqNotify(false))
	require.NoError(t, a.qp.PostSend([]verbs.SendWR{writeWR(1, a, b, 0, 8, verbs.SendSignaled)}))
	got, err = ch.Wait(10 * time.Second)
	require.NoError(t, err)
	require.Equal(t, a.cq, got)
}

func TestDevicesAndGIDTable(t *testing.T) {
	f := sim.NewFabric(sim.Config{})
	h := f.AddHost("a", sim.NIC{Name: "mlx5_0", PCIAddr: "0000:3b:00.0"}, sim.NIC{Name: "mlx5_1", Link: verbs.LinkInfiniBand})
	devs, err := h.Devices()
	require.NoError(t, err)
	require.Equal(t, []verbs.DeviceInfo{{Name: "mlx5_0", PCIAddr: "0000:3b:00.0"}, {Name: "mlx5_1"}}, devs)
	ctx, err := h.Open("mlx5_1")
	require.NoError(t, err)
	defer ctx.Close()
	pa, err := ctx.QueryPort(1)
	require.NoError(t, err)
	require.Equal(t, verbs.LinkInfiniBand, pa.LinkLayer)
	require.NotZero(t, pa.LID)
	g, err := ctx.QueryGID(1, 5)
	require.NoError(t, err)
	require.True(t, g.GID.IsZero(), "entries past the device's GIDs are empty")
	_, err = h.Open("mlx5_9")
	require.Error(t, err)
}
