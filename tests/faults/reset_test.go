package faults

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/mori-go/mori-go/core"
	"github.com/mori-go/mori-go/core/engine"
)

// TestStreamResetMidTransfer: a proxy on the data path resets one of the
// initiator's four streams while a batch of writes is under way: half of
// them of 2 MiB, cut in frames of 1 MiB spread over the streams, half of
// 512 KiB (one frame each).
// Every write either succeeds with all its bytes on the target (poisoned
// before each round, so a missing piece shows) or fails; none is reported
// successful with a piece missing; single-frame writes on the other
// streams go through. The engine redials the reset stream by itself, and
// the next batches succeed without a new registration.
func TestStreamResetMidTransfer(t *testing.T) {
	v := newEnv(t)
	a := v.engine("faults-reset-a")
	b := v.engine("faults-reset-b")
	px := newProxy(t, dataAddr(b.Desc()))
	require.NoError(t, a.RegisterRemoteEngine(throughProxy(b.Desc(), px)))
	require.NoError(t, b.RegisterRemoteEngine(a.Desc()))

	const n, size = 16, 2 << 20
	sizeOf := func(i int) uint64 { return uint64(size >> (2 * (i % 2))) } // 2 MiB, 512 KiB, ...
	src, dst := v.alloc(n*size), v.alloc(n*size)
	sd, dd := register(t, a, src), register(t, b, dst)
	batch := func(seed uint64) ([]*core.Status, *ended) {
		poison(dst.Bytes(), 0xEE)
		reqs := make([]engine.Request, n)
		for i := range reqs {
			off := uint64(i) * size
			fillPattern(src.Bytes()[off:off+sizeOf(i)], seed+uint64(i))
			reqs[i] = engine.Request{Local: sd, Remote: dd, Ranges: []core.Range{{LocalOffset: off, RemoteOffset: off, Size: sizeOf(i)}}, UID: a.AllocateTransferUID()}
		}
		sts := a.Submit(core.OpWrite, reqs)
		return sts, watchEnds(sts)
	}
	// check requires every write to have ended, the successful ones intact;
	// it returns how many succeeded and the first failure.
	check := func(sts []*core.Status, ends *ended, seed uint64) (ok int, firstErr string) {
		require.True(t, ends.wait(transferTimeout+waitSlack), "writes did not end within their timeout")
		for i, st := range sts {
			off := uint64(i) * size
			if st.Code() == core.StatusSuccess {
				ok++
				require.NoError(t, checkPattern(dst.Bytes()[off:off+sizeOf(i)], seed+uint64(i)), "write %d reported successful", i)
				continue
			}
			require.True(t, st.Code().Failed(), "write %d ended in %s", i, st.Code())
			if firstErr == "" {
				firstErr = st.Message()
			}
		}
		return ok, firstErr
	}

	sts, ends := batch(1)
	ok, _ := check(sts, ends, 1)
	require.Equal(t, n, ok, "writes failed before any fault")
	require.Equal(t, 4, px.count(), "the initiator should have four streams")

	// Cut stream 0 a moment into each batch until a cut hits writes in
	// flight (each round is 20 MiB; the first few milliseconds of it are
	// under way when the cut lands).
	hit := false
	for round := uint64(0); round < 5 && !hit; round++ {
		seed := 100 * (round + 2)
		conns := px.count()
		sts, ends := batch(seed)
		time.Sleep(2 * time.Millisecond)
		cut := time.Now()
		px.reset(conns - 4) // the oldest of the live streams
		ok, firstErr := check(sts, ends, seed)
		var failT []time.Duration
		for i, at := range ends.times() {
			if sts[i].Code() != core.StatusSuccess {
				failT = append(failT, at.Sub(cut))
			}
		}
		t.Logf("round %d: one of 4 streams reset; %d of %d writes (2 MiB and 512 KiB) intact, %d failed (%s after the reset): %s",
			round, ok, n, n-ok, durStats(failT), firstErr)
		hit = ok < n
		if hit {
			require.NotZero(t, ok, "no write went through the three streams left")
		}
		// The engine replaces the reset stream (a fifth connection).
		redialed := time.Now().Add(5 * time.Second)
		for px.count() < conns+1 && time.Now().Before(redialed) {
			time.Sleep(10 * time.Millisecond)
		}
		require.Equal(t, conns+1, px.count(), "the reset stream was not redialed")
		// Other streams went on: after the reset, new batches (no new
		// registration) succeed once the stream is redialed.
		var okAfter int
		var err2 string
		deadline := time.Now().Add(5 * time.Second)
		for okAfter < n && time.Now().Before(deadline) {
			sts, ends := batch(seed + 50)
			okAfter, err2 = check(sts, ends, seed+50)
		}
		require.Equal(t, n, okAfter, "writes after the reset still fail: %s", err2)
	}
	require.True(t, hit, "no reset landed while writes were in flight in 5 rounds")
	t.Logf("the proxy relayed %d connections: the 4 first ones and one redial per reset; no new registration", px.count())
}
