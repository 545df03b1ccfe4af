package faults

import (
	"fmt"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/mori-go/mori-go/core"
	"github.com/mori-go/mori-go/core/engine"
)

// inFlight submits n writes and n reads of size bytes between a's local
// memory and b's remote memory and returns their statuses.
func inFlight(a *engine.Engine, wsrc, rdst, remote core.MemoryDesc, n int, size uint64) []*core.Status {
	var reqs []engine.Request
	for range n {
		reqs = append(reqs, engine.Request{Local: wsrc, Remote: remote, Ranges: []core.Range{{Size: size}}, UID: a.AllocateTransferUID()})
	}
	sts := a.Submit(core.OpWrite, reqs)
	reqs = nil
	for i := range n {
		reqs = append(reqs, engine.Request{Local: rdst, Remote: remote, Ranges: []core.Range{{LocalOffset: uint64(i%2) * size, Size: size}}, UID: a.AllocateTransferUID()})
	}
	return append(sts, a.Submit(core.OpRead, reqs)...)
}

// tally waits for every status (hard deadline) and counts the outcomes.
func tally(t *testing.T, sts []*core.Status, since time.Time, mustMention string) (ok, failed int, ttf []time.Duration) {
	t.Helper()
	ends := watchEnds(sts)
	require.True(t, ends.wait(transferTimeout+waitSlack), "a transfer did not end within its timeout")
	for i, at := range ends.times() {
		switch c := sts[i].Code(); {
		case c == core.StatusSuccess:
			ok++
		case c.Failed():
			failed++
			ttf = append(ttf, at.Sub(since))
			require.Contains(t, sts[i].Message(), mustMention, "transfer %d", i)
		default:
			t.Fatalf("transfer %d: %s", i, c)
		}
	}
	return
}

// TestDeregisterTargetMemoryMidTransfer: the target deregisters the memory
// that writes and reads are using. Deregistration waits for the accesses
// under way; once it returns, the memory is poisoned and must stay so:
// nothing lands in it any more. The transfers end, the failed ones naming
// the memory.
func TestDeregisterTargetMemoryMidTransfer(t *testing.T) {
	v := newEnv(t)
	a, b := v.engine("prefill"), v.engine("decode")
	link(t, a, b)
	const n, size = 8, 16 << 20
	src, back, dst := v.alloc(size), v.alloc(2*size), v.alloc(size)
	sd, bd, dd := register(t, a, src), register(t, a, back), register(t, b, dst)
	sts := inFlight(a, sd, bd, dd, n, size)
	time.Sleep(20 * time.Millisecond)
	start := time.Now()
	require.NoError(t, b.DeregisterMemory(dd))
	took := time.Since(start)
	poison(dst.Bytes(), 0xAB)
	ok, failed, ttf := tally(t, sts, start, "memory")
	time.Sleep(100 * time.Millisecond)
	require.Equal(t, -1, firstNot(dst.Bytes(), 0xAB), "a byte landed after DeregisterMemory returned")
	require.NotZero(t, failed, "every transfer ended before the deregistration: the test proved nothing")
	st := write(a, sd, dd, 0, 0, 16)
	require.Equal(t, core.ErrNotFound, st.Wait(transferTimeout+waitSlack), st.Message())
	t.Logf("target memory deregistered with %d transfers of 16 MiB in flight: DeregisterMemory took %s; %d succeeded before, %d failed (%s after it returned)",
		2*n, took.Round(time.Microsecond), ok, failed, durStats(ttf))
}

// TestDeregisterLocalMemoryMidTransfer: the initiator deregisters the memory
// that its reads land in (and its writes come from). Once it returns, the
// memory is poisoned and must stay so.
func TestDeregisterLocalMemoryMidTransfer(t *testing.T) {
	v := newEnv(t)
	a, b := v.engine("prefill"), v.engine("decode")
	link(t, a, b)
	const n, size = 8, 16 << 20
	src, back, dst := v.alloc(size), v.alloc(2*size), v.alloc(size)
	sd, bd, dd := register(t, a, src), register(t, a, back), register(t, b, dst)
	sts := inFlight(a, sd, bd, dd, n, size)
	time.Sleep(20 * time.Millisecond)
	start := time.Now()
	require.NoError(t, a.DeregisterMemory(bd))
	require.NoError(t, a.DeregisterMemory(sd))
	took := time.Since(start)
	poison(back.Bytes(), 0xAB)
	ok, failed, ttf := tally(t, sts, start, "memory")
	time.Sleep(100 * time.Millisecond)
	require.Equal(t, -1, firstNot(back.Bytes(), 0xAB), "a read landed after DeregisterMemory returned")
	require.NotZero(t, failed)
	t.Logf("local memory deregistered with %d transfers of 16 MiB in flight: DeregisterMemory took %s; %d succeeded before, %d failed (%s after it returned)",
		2*n, took.Round(time.Microsecond), ok, failed, durStats(ttf))
}

// TestDeregisterRemoteEngineMidTransfer: the initiator forgets its peer
// with writes and reads in flight. They fail at once, saying so; once they
// have all ended, the local memory the reads used is poisoned and must stay
// so. Registering the peer again makes it usable again.
func TestDeregisterRemoteEngineMidTransfer(t *testing.T) {
	if !isolated(t) { // a stream failing under responses can crash the engine: see TestDeregisterRemoteEngineRacesResponses
		return
	}
	v := newEnv(t)
	a, b := v.engine("prefill"), v.engine("decode")
	link(t, a, b)
	const n, size = 8, 16 << 20
	src, back, dst := v.alloc(size), v.alloc(2*size), v.alloc(size)
	sd, bd, dd := register(t, a, src), register(t, a, back), register(t, b, dst)
	sts := inFlight(a, sd, bd, dd, n, size)
	time.Sleep(20 * time.Millisecond)
	start := time.Now()
	require.NoError(t, a.DeregisterRemoteEngine(b.Desc()))
	took := time.Since(start)
	ok, failed, ttf := tally(t, sts, start, `"decode"`)
	poison(back.Bytes(), 0xAB)
	time.Sleep(200 * time.Millisecond)
	require.Equal(t, -1, firstNot(back.Bytes(), 0xAB), "a read landed after its transfer had failed")
	require.NotZero(t, failed)
	st := write(a, sd, dd, 0, 0, 16)
	require.Equal(t, core.ErrNotFound, st.Wait(transferTimeout+waitSlack), st.Message())
	require.Contains(t, st.Message(), "not registered")

	require.NoError(t, a.RegisterRemoteEngine(b.Desc()))
	fillPattern(src.Bytes()[:1<<20], 4)
	requireSuccess(t, write(a, sd, dd, 0, 0, 1<<20), "after registering again")
	require.NoError(t, checkPattern(dst.Bytes()[:1<<20], 4))
	t.Logf("remote engine deregistered with %d transfers of 16 MiB in flight: DeregisterRemoteEngine took %s; %d succeeded before, %d failed (%s after it returned)",
		2*n, took.Round(time.Microsecond), ok, failed, durStats(ttf))
}

// TestTimedOutReadDoesNotLandLater: a read whose response is slow (a proxy
// delays the target's answers by 1.5 s) times out after 500 ms. Once its
// status says ERR_TIMEOUT the application owns the buffer again: it may
// reuse it for something else. The late response must not be written into
// it.
func TestTimedOutReadDoesNotLandLater(t *testing.T) {
	v := newEnv(t)
	const timeout, delay = 500 * time.Millisecond, 1500 * time.Millisecond
	a := v.engine("prefill", withTimeout(timeout))
	b := v.engine("decode")
	px := newProxy(t, dataAddr(b.Desc()))
	require.NoError(t, a.RegisterRemoteEngine(throughProxy(b.Desc(), px)))
	const size = 1 << 20
	local, remote := v.alloc(size), v.alloc(size)
	fillPattern(remote.Bytes(), 8)
	ld, rd := register(t, a, local), register(t, b, remote)
	requireSuccess(t, read(a, ld, rd, 0, 0, size), "read without delay")
	require.NoError(t, checkPattern(local.Bytes(), 8))

	px.delay.Store(int64(delay))
	poison(local.Bytes(), 0)
	start := time.Now()
	st := read(a, ld, rd, 0, 0, size)
	c := st.Wait(timeout + waitSlack)
	failedAfter := time.Since(start)
	require.Equal(t, core.ErrTimeout, c, st.Message())
	// The application reuses its buffer.
	poison(local.Bytes(), 0xAB)
	time.Sleep(delay + 500*time.Millisecond)
	landed := firstNot(local.Bytes(), 0xAB)
	t.Logf("read timed out after %s (%s); %s later the buffer, reused by the application, %s",
		failedAfter.Round(time.Millisecond), st.Message(), (delay + 500*time.Millisecond).String(),
		map[bool]string{true: fmt.Sprintf("was overwritten from byte %d by the late response", landed), false: "is untouched"}[landed >= 0])
	require.Equal(t, -1, landed, "the late response of a timed-out read was written into the application's buffer")
}

// TestDeregisterRemoteEngineRacesResponses: many rounds of small reads and
// writes in flight while the initiator deregisters its peer (and registers
// it again). The responses being matched to frames race the streams' fail
// path; the engine must not crash (it runs in a child process so that a
// crash fails this test only) and every transfer must end.
func TestDeregisterRemoteEngineRacesResponses(t *testing.T) {
	if !isolated(t) {
		return
	}
	v := newEnv(t)
	a, b := v.engine("prefill"), v.engine("decode")
	link(t, a, b)
	const n, size, rounds = 200, 4 << 10, 60
	src, back, dst := v.alloc(n*size), v.alloc(n*size), v.alloc(n*size)
	sd, bd, dd := register(t, a, src), register(t, a, back), register(t, b, dst)
	r := rand.New(rand.NewPCG(1, 2))
	counts := map[core.StatusCode]int{}
	for range rounds {
		var reqs []engine.Request
		for i := range n {
			reqs = append(reqs, engine.Request{Local: bd, Remote: dd, Ranges: []core.Range{{LocalOffset: uint64(i * size), RemoteOffset: uint64(i * size), Size: size}}, UID: a.AllocateTransferUID()})
		}
		sts := a.Submit(core.OpRead, reqs)
		reqs = nil
		for i := range n {
			reqs = append(reqs, engine.Request{Local: sd, Remote: dd, Ranges: []core.Range{{LocalOffset: uint64(i * size), RemoteOffset: uint64(i * size), Size: size}}, UID: a.AllocateTransferUID()})
		}
		sts = append(sts, a.Submit(core.OpWrite, reqs)...)
		time.Sleep(time.Duration(r.IntN(1500)) * time.Microsecond)
		require.NoError(t, a.DeregisterRemoteEngine(b.Desc()))
		ends := watchEnds(sts)
		require.True(t, ends.wait(transferTimeout+waitSlack))
		for _, st := range sts {
			counts[st.Code()]++
		}
		require.NoError(t, a.RegisterRemoteEngine(b.Desc()))
	}
	t.Logf("%d rounds of %d reads and %d writes of 4 KiB, the peer deregistered while they ran: outcomes %v", rounds, n, n, counts)
}
