package tcp

import (
	"net"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/mori-go/mori-go/core"
)

// An initiator that gives up on a write (it resets the stream, reports the
// transfer failed and may hand the memory to a new transfer at once) must
// not see the write land afterwards, however little the target lagged
// behind: here its serving goroutine is held just before it lands the
// payload, the initiator resets, and the goroutine runs on at once (no
// pause the old after-a-gap check would have noticed). The one-hour soak
// hit this as a write reported successful and then overwritten by the late
// bytes of an earlier, failed write into the same memory.
func TestWriteOfAResetInitiatorNeverLandsLate(t *testing.T) {
	for _, size := range []int{4 << 10, 1 << 20} { // from the read buffer; straight from the socket
		t.Run(byteSize(size), func(t *testing.T) {
			target := newNode(t, "late-target", nil, nil)
			g := newGuarded(t, target.reg, size)
			g.fill(1)
			held, release := holdFirstLanding(t, target) // the first write only
			before := g.snapshot()

			p := handshake(t, target, "late-initiator")
			payload := make([]byte, size)
			for i := range payload {
				payload[i] = byte(i*7 + 3)
			}
			p.write(request(reqWrite, ref(g.r), 9, 9, 1, []core.Range{{Size: uint64(size)}}, payload[:size/2]))
			select {
			case <-held:
			case <-time.After(ioDeadline):
				t.Fatal("the target never started landing the write")
			}
			if size > 4<<10 {
				p.write(payload[size/2:]) // the rest arrives while the target is held
			}
			tc := p.c.(*net.TCPConn)
			require.NoError(t, tc.SetLinger(0))
			require.NoError(t, tc.Close()) // the initiator gives up: reset
			release()

			require.Eventually(t, func() bool {
				_, ok := target.inbound.Pop(core.InboundKey{Peer: "late-initiator", UID: 9})
				return ok
			}, ioDeadline, time.Millisecond, "the target never ended the write")
			require.Equal(t, before, g.mem(), "bytes of a write whose initiator had reset the stream landed")
			g.checkGuards(t)
			checkLegit(t, target, g)
		})
	}
}

func byteSize(n int) string {
	if n >= 1<<20 {
		return "MiB"
	}
	return "KiB"
}

// Submit never waits for the socket: small writes to a target that has
// stopped reading (here its serving goroutine is held) fill the socket's
// buffers, and the submitter, which writes a small frame on an idle
// stream itself, must hand what the socket does not take to the writer
// goroutine rather than wait (on a lossy link the wait lasted seconds and
// the deadlines of the requests behind it started late). Once the target
// reads again every write lands intact: the frames cut by a full socket
// are finished by the writer.
func TestSubmitDoesNotWaitForAFullSocket(t *testing.T) {
	for _, batched := range []bool{false, true} {
		name := map[bool]string{false: "one Submit each", true: "one batch"}[batched]
		t.Run(name, func(t *testing.T) { testSubmitDoesNotWait(t, batched) })
	}
}

func testSubmitDoesNotWait(t *testing.T, batched bool) {
	const n, size = 64, 64 << 10 // 4 MiB: far more than the buffers of a stream nobody reads
	target := newNode(t, "full-target", nil, nil)
	dst := newGuarded(t, target.reg, n*size)
	held, unhold := holdFirstLanding(t, target)
	ini := newNode(t, "full-initiator", nil, func(c *Config) { c.Streams = 1 })
	require.NoError(t, ini.b.AddPeer(target.desc()))
	src := newGuarded(t, ini.reg, n*size)
	src.fill(7)

	sts := make([]*core.Status, n)
	ts := make([]*core.Transfer, n)
	for i := range ts {
		sts[i] = core.NewStatus()
		off := uint64(i * size)
		ts[i] = &core.Transfer{
			Op: core.OpWrite, UID: uint64(i + 1), Instance: uint64(i + 1), Peer: target.key, Local: src.r, Status: sts[i], Bytes: size,
			Ranges: []core.Range{{LocalOffset: off, RemoteOffset: off, Size: size}},
			Remote: core.MemoryDesc{EngineKey: target.key, ID: dst.r.ID, Token: dst.r.Token(), Location: core.LocationCPU, Size: dst.r.Size},
		}
	}
	submitted := make(chan struct{})
	go func() {
		defer close(submitted)
		if batched {
			ini.b.SubmitBatch(ts)
			return
		}
		for _, tr := range ts {
			ini.b.Submit(tr)
		}
	}()
	select {
	case <-held:
	case <-time.After(ioDeadline):
		t.Fatal("the target never started landing the first write")
	}
	select {
	case <-submitted:
	case <-time.After(ioDeadline / 2):
		t.Fatal("Submit waited for the socket of a target that does not read")
	}
	for _, st := range sts {
		require.False(t, st.Code().Terminal(), "a write ended while the target was held: %s", st.Message())
	}
	unhold()
	for i, st := range sts {
		require.Equal(t, core.StatusSuccess, st.Wait(ioDeadline), "write %d: %s", i, st.Message())
	}
	require.Equal(t, src.mem(), dst.mem(), "bytes differ after writes cut by a full socket")
	dst.checkGuards(t)
}
