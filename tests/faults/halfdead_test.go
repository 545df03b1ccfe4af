package faults

import (
	"bytes"
	"fmt"
	"os"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/mori-go/mori-go/core"
	"github.com/mori-go/mori-go/core/engine"
	"github.com/mori-go/mori-go/stack"
)

// TestHalfDeadPeer: the target process is stopped (SIGSTOP): its kernel
// still accepts connections and buffers bytes, but nothing reads them.
// The initiator keeps submitting writes for a while; every one fails within
// its timeout, the initiator's heap stays bounded (frames do not pile up
// behind the dead streams), and once the target runs again (SIGCONT)
// nothing lands in its memory for the writes already reported failed.
func TestHalfDeadPeer(t *testing.T) {
	const (
		timeout   = 2 * time.Second
		stall     = time.Second
		mem       = 64 << 20
		size      = 64 << 10 // each write
		perTick   = 64       // writes submitted every tick
		tick      = 20 * time.Millisecond
		submitFor = timeout // writes are submitted this long after the stop
	)
	v := newEnv(t)
	a := v.engine("faults-halfdead-a", withTimeout(timeout), func(c *stack.Config) { c.TCP.StallTimeout = stall; c.TCP.DialTimeout = stall })
	target := startChild(t, childConfig{Role: "target", Key: "faults-halfdead", Host: "127.0.0.1", Mem: mem,
		TimeoutMS: int(timeout / time.Millisecond), StallMS: int(stall / time.Millisecond), DialMS: int(stall / time.Millisecond)})
	require.NoError(t, a.RegisterRemoteEngine(target.engineDesc()))
	tm := target.memDesc()
	src := v.alloc(mem)
	fillPattern(src.Bytes(), 9)
	sd := register(t, a, src)
	requireSuccess(t, write(a, sd, tm, 0, 0, 1<<20), "write before the stop")
	require.True(t, target.call(msg{Cmd: "poison", Size: mem, Seed: 0xEE}, 10*time.Second).OK)
	base := settled(1<<30, 0)

	require.NoError(t, target.cmd.Process.Signal(syscall.SIGSTOP))
	waitState(t, target.cmd.Process.Pid, 'T')
	stopped := time.Now()
	t.Cleanup(func() { target.cmd.Process.Signal(syscall.SIGCONT) })
	peak := startPeakSampler(5 * time.Millisecond)
	var sts []*core.Status
	var submitted []time.Time
	for i := 0; time.Since(stopped) < submitFor; i++ {
		reqs := make([]engine.Request, perTick)
		for k := range reqs {
			off := uint64((i*perTick+k)%(mem/size)) * size
			reqs[k] = engine.Request{Local: sd, Remote: tm, Ranges: []core.Range{{LocalOffset: off, RemoteOffset: off, Size: size}}, UID: a.AllocateTransferUID()}
		}
		now := time.Now()
		for range reqs {
			submitted = append(submitted, now)
		}
		sts = append(sts, a.Submit(core.OpWrite, reqs)...)
		time.Sleep(tick)
	}
	ends := watchEnds(sts)
	require.True(t, ends.wait(timeout+waitSlack), "writes to the stopped peer did not all end")
	top := peak.finish()
	var failT []time.Duration
	first := ""
	for i, at := range ends.times() {
		require.True(t, sts[i].Code().Failed(), "write %d to the stopped peer ended in %s", i, sts[i].Code())
		d := at.Sub(submitted[i])
		require.LessOrEqual(t, d, timeout+time.Second, "write %d failed after its timeout: %s", i, sts[i].Message())
		failT = append(failT, d)
		if first == "" {
			first = sts[i].Message()
		}
	}
	// Stopped longer than the timeout: until every write submitted was
	// past its deadline, and some more.
	time.Sleep(time.Until(stopped.Add(submitFor + timeout + 500*time.Millisecond)))
	stoppedFor := time.Since(stopped)
	require.NoError(t, target.cmd.Process.Signal(syscall.SIGCONT))
	// The target runs again: give it time to read whatever its kernel
	// buffered, then check that none of it landed.
	time.Sleep(500 * time.Millisecond)
	untouched := target.call(msg{Cmd: "untouched", Size: mem, Seed: 0xEE}, 10*time.Second)
	growth := int64(top.HeapInuse) - int64(base.HeapInuse)
	t.Logf("target stopped for %s; %d writes of 64 KiB (%d MiB) submitted over %s: all failed, %s after submission: %s",
		stoppedFor.Round(time.Millisecond), len(sts), len(sts)*size>>20, submitFor, durStats(failT), first)
	t.Logf("initiator heap in use: %s before, peak %s (+%.1f MiB); after SIGCONT the target's memory untouched: %v %s",
		mib(base.HeapInuse), mib(top.HeapInuse), float64(growth)/(1<<20), untouched.OK, untouched.Err)
	// Bounded: frames in flight are at most a window per stream; the rest
	// of a write stays in the application's registered memory.
	require.Less(t, growth, int64(64<<20), "the initiator's heap grew by %.1f MiB while the peer was stopped", float64(growth)/(1<<20))
	require.True(t, untouched.OK, "bytes of writes already reported failed landed once the target ran again: %s", untouched.Err)

	// The peer is back: writes go through again (after the redial).
	deadline := time.Now().Add(3 * timeout)
	var st *core.Status
	for time.Now().Before(deadline) {
		fillPattern(src.Bytes()[:1<<20], 10)
		st = write(a, sd, tm, 0, 0, 1<<20)
		if st.Wait(timeout+waitSlack) == core.StatusSuccess {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	require.Equal(t, core.StatusSuccess, st.Code(), "no write succeeded after SIGCONT: %s", st.Message())
	require.True(t, target.call(msg{Cmd: "check", Size: 1 << 20, Seed: 10}, 10*time.Second).OK)
}

// waitState waits until process pid is in state (a letter of
// /proc/PID/stat: 'T' stopped), for at most 5 s.
func waitState(t *testing.T, pid int, state byte) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
		require.NoError(t, err)
		// pid (comm) S ...: the state follows the last ')'.
		if i := bytes.LastIndexByte(b, ')'); i >= 0 && i+2 < len(b) && b[i+2] == state {
			return
		}
		require.True(t, time.Now().Before(deadline), "process %d not in state %c after 5 s: %s", pid, state, b)
		time.Sleep(time.Millisecond)
	}
}
