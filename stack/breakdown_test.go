//go:build latencytrace

package stack_test

import (
	"bufio"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/mori-go/mori-go/core"
	"github.com/mori-go/mori-go/core/engine"
	"github.com/mori-go/mori-go/internal/hostmem"
	"github.com/mori-go/mori-go/internal/lattrace"
	"github.com/mori-go/mori-go/stack"
)

// The breakdown's knobs come from the environment: it is a measurement run
// by scripts/latency-breakdown.sh, not a unit test.
//
//	MORI_BREAKDOWN_N     timed writes (default 3000)
//	MORI_BREAKDOWN_SIZE  bytes per write (default 4096)
//	MORI_BREAKDOWN_OUT   file to write the markdown table to
//	MORI_BREAKDOWN_ROLE  "target" in the child process
const breakdownWarmup = 500

func envInt(name string, def int) int {
	if v, err := strconv.Atoi(os.Getenv(name)); err == nil && v > 0 {
		return v
	}
	return def
}

func newBreakdownEngine(t *testing.T, key string, mem *hostmem.Buffer) (*engine.Engine, core.MemoryDesc) {
	e, err := stack.New(stack.Config{Config: engine.Config{Key: key}, NoRDMA: true})
	require.NoError(t, err)
	_, err = e.CreateBackend(core.BackendTCP, nil)
	require.NoError(t, err)
	md, err := e.RegisterMemory(mem.Addr(), uint64(mem.Len()), -1, core.LocationCPU)
	require.NoError(t, err)
	return e, md
}

// TestBreakdown times the steps of one small write from an engine in this
// process to an engine in a child process (as the benchmark's engines
// are), one write at a time, from a goroutine locked to its thread (as a
// C or Python caller is), and prints the median of each step.
func TestBreakdown(t *testing.T) {
	if os.Getenv("MORI_BREAKDOWN_ROLE") == "target" {
		breakdownTarget(t)
		return
	}
	n, size := envInt("MORI_BREAKDOWN_N", 3000), uint64(envInt("MORI_BREAKDOWN_SIZE", 4096))
	src, err := hostmem.Alloc(int(64 * size))
	require.NoError(t, err)
	for i := range src.Bytes() {
		src.Bytes()[i] = byte(i*7 + 1)
	}
	a, sd := newBreakdownEngine(t, "breakdown-initiator", src)
	defer a.Close()

	child := exec.Command(os.Args[0], "-test.run=^TestBreakdown$")
	child.Env = append(os.Environ(), "MORI_BREAKDOWN_ROLE=target", "MORI_BREAKDOWN_SIZE="+strconv.Itoa(int(64*size)))
	child.Stderr = os.Stderr
	stdin, err := child.StdinPipe()
	require.NoError(t, err)
	stdout, err := child.StdoutPipe()
	require.NoError(t, err)
	require.NoError(t, child.Start())
	defer child.Process.Kill()
	lines := bufio.NewScanner(stdout)
	lines.Buffer(nil, 64<<20)
	next := func(prefix string) string {
		for lines.Scan() {
			if s, ok := strings.CutPrefix(lines.Text(), prefix); ok {
				return s
			}
		}
		t.Fatalf("target process: no %q line (%v)", prefix, lines.Err())
		return ""
	}
	var ed core.EngineDesc
	var dd core.MemoryDesc
	f := strings.Fields(next("breakdown-target "))
	require.Len(t, f, 2)
	for i, u := range []interface{ UnmarshalBinary([]byte) error }{&ed, &dd} {
		b, err := hex.DecodeString(f[i])
		require.NoError(t, err)
		require.NoError(t, u.UnmarshalBinary(b))
	}
	require.NoError(t, a.RegisterRemoteEngine(ed))

	fmt.Fprintln(stdin, "start")
	next("breakdown-started")
	switches := contextSwitches()
	err = breakdownWrites(a, sd, dd, n+breakdownWarmup, size)
	switches = contextSwitches() - switches
	require.NoError(t, err)
	var marks [lattrace.NumSteps][]int64
	for s := range lattrace.NumSteps {
		marks[s] = lattrace.Marks(s)
	}
	fmt.Fprintln(stdin, "dump")
	var theirs map[lattrace.Step][]int64
	require.NoError(t, json.Unmarshal([]byte(next("breakdown-marks ")), &theirs))
	for s, v := range theirs {
		marks[s] = v
	}
	targetSwitches, err := strconv.ParseInt(next("breakdown-switches "), 10, 64)
	require.NoError(t, err)
	table := breakdownTable(marks, n, size)
	table += fmt.Sprintf("| thread switches per write, initiator + target process | %.1f + %.1f |\n",
		float64(switches)/float64(n+breakdownWarmup), float64(targetSwitches)/float64(n+breakdownWarmup))
	t.Log("\n" + table)
	if out := os.Getenv("MORI_BREAKDOWN_OUT"); out != "" {
		require.NoError(t, os.WriteFile(out, []byte(table), 0o644))
	}
}

// breakdownWrites makes n writes of size bytes, one at a time, from a
// goroutine locked to its thread that waits as the C ABI does
// (WaitAllThread).
func breakdownWrites(a *engine.Engine, sd, dd core.MemoryDesc, n int, size uint64) error {
	done := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		defer runtime.UnlockOSThread()
		for i := range n {
			off := uint64(i%64) * size
			req := engine.Request{Local: sd, Remote: dd, UID: a.AllocateTransferUID(),
				Ranges: []core.Range{{LocalOffset: off, RemoteOffset: off, Size: size}}}
			sts := a.Submit(core.OpWrite, []engine.Request{req})
			code := core.WaitAllThread(sts, time.Minute)
			lattrace.Mark(lattrace.WaiterBack)
			if code != core.StatusSuccess {
				done <- fmt.Errorf("write %d: %s: %s", i, code, sts[0].Message())
				return
			}
		}
		done <- nil
	}()
	return <-done
}

// breakdownTarget is the child process: a target engine that prints its
// descriptors, serves writes, and prints its marks when told.
func breakdownTarget(t *testing.T) {
	dst, err := hostmem.Alloc(envInt("MORI_BREAKDOWN_SIZE", 1<<20))
	require.NoError(t, err)
	b, dd := newBreakdownEngine(t, "breakdown-target", dst)
	defer b.Close()
	ed := b.Desc()
	eb, err := ed.MarshalBinary()
	require.NoError(t, err)
	mb, err := dd.MarshalBinary()
	require.NoError(t, err)
	fmt.Printf("breakdown-target %x %x\n", eb, mb)
	in := bufio.NewScanner(os.Stdin)
	var switches int64
	for in.Scan() && in.Text() != "dump" {
		if in.Text() == "start" {
			switches = contextSwitches()
			fmt.Println("breakdown-started")
		}
	}
	switches = contextSwitches() - switches
	m := map[lattrace.Step][]int64{}
	for _, s := range []lattrace.Step{lattrace.TargetWake, lattrace.TargetCheck, lattrace.TargetLand, lattrace.AckOut} {
		m[s] = lattrace.Marks(s)
	}
	j, err := json.Marshal(m)
	require.NoError(t, err)
	fmt.Printf("breakdown-marks %s\n", j)
	fmt.Printf("breakdown-switches %d\n", switches)
}

// contextSwitches returns the context switches of this process's threads
// so far, voluntary (a thread sleeps) and not.
func contextSwitches() int64 {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return ru.Nvcsw + ru.Nivcsw
}

// breakdownTable is the median time of each step since the step before
// it, over the last n writes, and the median of the whole.
func breakdownTable(marks [lattrace.NumSteps][]int64, n int, size uint64) string {
	out := fmt.Sprintf("| step of one %d B write (median of %d) | µs |\n|---|---|\n", size, n)
	med := func(v []float64) float64 {
		if len(v) == 0 {
			return 0
		}
		slices.Sort(v)
		return v[len(v)/2]
	}
	// The i-th mark of every step belongs to the i-th write; count from
	// the end so that warm-up marks drop out.
	at := func(s lattrace.Step, i int) int64 {
		m := marks[s]
		if k := len(m) - n + i; k >= 0 && k < len(m) {
			return m[k]
		}
		return 0
	}
	for s := lattrace.Step(1); s < lattrace.NumSteps; s++ {
		var d []float64
		for i := range n {
			if a, b := at(s-1, i), at(s, i); a != 0 && b != 0 {
				d = append(d, float64(b-a)/1e3)
			}
		}
		if len(d) == 0 {
			out += fmt.Sprintf("| %s | not reached |\n", s)
			continue
		}
		out += fmt.Sprintf("| %s | %.1f |\n", s, med(d))
	}
	var total []float64
	for i := range n {
		total = append(total, float64(at(lattrace.WaiterBack, i)-at(lattrace.Submit, i))/1e3)
	}
	out += fmt.Sprintf("| **submit to waiter, median** | **%.1f** |\n", med(total))
	return out
}
