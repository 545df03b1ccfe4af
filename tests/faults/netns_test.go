package faults

import (
	"fmt"
	"os"
	"os/exec"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/mori-go/mori-go/core"
)

// Link faults between two engines, each in its own network namespace, the
// namespaces joined by a veth pair: 10.231.0.1 (initiator, namespace A)
// and 10.231.0.2 (target, namespace B). The addresses exist only inside
// the test's namespaces. The link is taken down with `ip link set`; loss
// is made with nftables (loss_test.go), a rate limit with tc tbf.

const (
	nsAddrA = "10.231.0.1"
	nsAddrB = "10.231.0.2"
	// Link-fault timeouts: the initiator's transfer timeout, stall timeout
	// and dial timeout.
	linkTimeout = 8 * time.Second
	linkStall   = 3 * time.Second
	linkDial    = 2 * time.Second
)

var nsName = regexp.MustCompile(`^mgf(\d+)[ab]$`)

type netnsPair struct {
	t      testing.TB
	a, b   string // namespace names
	va, vb string // veth ends
}

func run(args ...string) (string, error) {
	out, err := exec.Command(args[0], args[1:]...).CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("%s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return string(out), nil
}

// sweepStaleNamespaces deletes namespaces left by test processes that died
// before their clean-up ran.
func sweepStaleNamespaces() {
	out, err := run("ip", "netns", "list")
	if err != nil {
		return
	}
	for _, line := range strings.Split(out, "\n") {
		f := strings.Fields(line)
		if len(f) == 0 {
			continue
		}
		m := nsName.FindStringSubmatch(f[0])
		if m == nil {
			continue
		}
		pid, _ := strconv.Atoi(m[1])
		if _, err := os.Stat(fmt.Sprintf("/proc/%d", pid)); err == nil {
			continue // its test is still running
		}
		run("ip", "netns", "del", f[0])
	}
}

// newNetnsPair makes the namespaces and the veth pair, or skips the test
// where that cannot be done.
func newNetnsPair(t *testing.T) *netnsPair {
	t.Helper()
	if runtime.GOOS != "linux" {
		t.Skip("link-fault tests need Linux network namespaces")
	}
	if os.Geteuid() != 0 {
		t.Skip("link-fault tests need root (to make network namespaces and a veth pair); run as root to include them")
	}
	if _, err := exec.LookPath("ip"); err != nil {
		t.Skip("link-fault tests need iproute2's ip command: ", err)
	}
	sweepStaleNamespaces()
	pid := os.Getpid()
	p := &netnsPair{t: t, a: fmt.Sprintf("mgf%da", pid), b: fmt.Sprintf("mgf%db", pid), va: fmt.Sprintf("mgfa%d", pid%10000000), vb: fmt.Sprintf("mgfb%d", pid%10000000)}
	if _, err := run("ip", "netns", "add", p.a); err != nil {
		t.Skip("network namespaces unavailable here: ", err)
	}
	t.Cleanup(func() {
		run("ip", "netns", "del", p.a)
		run("ip", "netns", "del", p.b)
	})
	for _, cmd := range [][]string{
		{"ip", "netns", "add", p.b},
		{"ip", "link", "add", p.va, "netns", p.a, "type", "veth", "peer", "name", p.vb, "netns", p.b},
		{"ip", "-n", p.a, "addr", "add", nsAddrA + "/24", "dev", p.va},
		{"ip", "-n", p.b, "addr", "add", nsAddrB + "/24", "dev", p.vb},
		{"ip", "-n", p.a, "link", "set", "lo", "up"},
		{"ip", "-n", p.b, "link", "set", "lo", "up"},
		{"ip", "-n", p.a, "link", "set", p.va, "up"},
		{"ip", "-n", p.b, "link", "set", p.vb, "up"},
	} {
		if _, err := run(cmd...); err != nil {
			t.Skip("cannot set up the veth pair between namespaces: ", err)
		}
	}
	return p
}

// tc runs `tc qdisc VERB dev DEV ARGS...` inside a namespace.
func (p *netnsPair) tc(ns, dev string, args ...string) {
	p.t.Helper()
	argv := []string{"ip", "netns", "exec", ns, "tc", "qdisc", args[0], "dev", dev}
	_, err := run(append(argv, args[1:]...)...)
	require.NoError(p.t, err)
}

func (p *netnsPair) linkSet(ns, dev, state string) {
	p.t.Helper()
	_, err := run("ip", "-n", ns, "link", "set", dev, state)
	require.NoError(p.t, err)
}

// peers starts a target in namespace B and an initiator in namespace A and
// registers the target with the initiator.
func (p *netnsPair) peers(t *testing.T, mem int) (target, initiator *child) {
	t.Helper()
	target = startChild(t, childConfig{Role: "target", Key: "faults-ns-target", Host: nsAddrB, Mem: mem,
		TimeoutMS: int(linkTimeout / time.Millisecond), StallMS: int(linkStall / time.Millisecond), DialMS: int(linkDial / time.Millisecond)},
		"ip", "netns", "exec", p.b)
	initiator = startChild(t, childConfig{Role: "initiator", Key: "faults-ns-initiator", Host: nsAddrA, Mem: mem,
		TimeoutMS: int(linkTimeout / time.Millisecond), StallMS: int(linkStall / time.Millisecond), DialMS: int(linkDial / time.Millisecond)},
		"ip", "netns", "exec", p.a)
	r := initiator.call(msg{Cmd: "register", Engine: target.ready.Engine, Mem: target.ready.Mem}, 20*time.Second)
	require.True(t, r.OK, "register the target across the veth pair: %s", r.Err)
	return target, initiator
}

// outcome checks a batch of writes run by an initiator child: each either
// succeeded, with its bytes intact on the target and the target's inbound
// status SUCCESS, or failed within its timeout. It returns the counts and
// the durations.
func outcome(t *testing.T, target *child, res msg, size uint64, seed, uid0 uint64) (ok, failed int, okT, failT []time.Duration, firstErr string) {
	t.Helper()
	require.True(t, res.OK, res.Err)
	// A Submit that waited for the socket (it writes small frames itself)
	// delayed the deadlines of the requests behind it by as long.
	require.Less(t, res.SubmitMS, float64(linkStall/time.Millisecond),
		"Submit of %d writes waited %.0f ms for the lossy link", len(res.Result), res.SubmitMS)
	for i, r := range res.Result {
		d := time.Duration(r.MS * float64(time.Millisecond))
		require.GreaterOrEqual(t, r.MS, 0.0, "transfer %d never ended", i)
		if r.Code == core.StatusSuccess {
			ok++
			okT = append(okT, d)
			c := target.call(msg{Cmd: "check", Off: uint64(i) * size, Size: size, Seed: seed + uint64(i)}, 20*time.Second)
			require.True(t, c.OK, "transfer %d succeeded but its bytes differ on the target: %s", i, c.Err)
			in := target.call(msg{Cmd: "inbound", Peer: "faults-ns-initiator", UID: uid0 + uint64(i)}, 10*time.Second)
			require.True(t, in.Found && in.Code == int(core.StatusSuccess), "transfer %d: the target's inbound status is %d %s", i, in.Code, in.Err)
			continue
		}
		failed++
		failT = append(failT, d)
		if firstErr == "" {
			firstErr = r.Msg
		}
		require.True(t, r.Code.Failed(), "transfer %d ended in %s", i, r.Code)
		// The deadline is armed in Submit, which never waits for the link
		// (checked below); the slack is the timer's goroutine on a loaded
		// machine.
		require.LessOrEqual(t, d, linkTimeout+2*time.Second, "transfer %d failed after its timeout: %s", i, r.Msg)
	}
	return
}

func TestLinkFaults(t *testing.T) {
	p := newNetnsPair(t)

	// The link goes down mid-transfer. The writes are slowed by a token
	// bucket (tbf, which needs no netem) so that the fault lands while they
	// are under way.
	down := func(t *testing.T, ns, dev, what string) {
		const n, size = 8, 256 << 10
		target, initiator := p.peers(t, n*size)
		shaped := true
		if _, err := run("ip", "netns", "exec", p.a, "tc", "qdisc", "add", "dev", p.va, "root", "tbf", "rate", "8mbit", "burst", "32kb", "latency", "400ms"); err != nil {
			shaped = false
			t.Logf("no tbf (%v): the fault may land after the writes ended", err)
		}
		t.Cleanup(func() {
			run("ip", "netns", "exec", p.a, "tc", "qdisc", "del", "dev", p.va, "root")
			run("ip", "-n", ns, "link", "set", dev, "up")
		})
		var wg sync.WaitGroup
		wg.Add(1)
		go func() {
			defer wg.Done()
			time.Sleep(500 * time.Millisecond)
			run("ip", "-n", ns, "link", "set", dev, "down")
		}()
		res := initiator.call(msg{Cmd: "write", N: n, Size: size, Seed: 1, UID: 1}, linkTimeout+40*time.Second)
		wg.Wait()
		ok, failed, okT, failT, first := outcome(t, target, res, size, 1, 1)
		t.Logf("%s 500 ms into 8 writes of 256 KiB (link shaped to 8 Mbit/s: %v): %d intact (time %s), %d failed within the timeout (time %s): %s",
			what, shaped, ok, durStats(okT), failed, durStats(failT), first)
		require.NotZero(t, failed, "no write was under way when the link went down")

		// While the link is down: a batch of new writes fails within the
		// timeout, and Submit itself must not block for long (the backend
		// contract: "It must not block for long").
		const batch = 6
		res = initiator.call(msg{Cmd: "write", N: batch, Size: 4096, Seed: 50, UID: 50}, linkTimeout+60*time.Second)
		require.True(t, res.OK)
		var downT []time.Duration
		for _, r := range res.Result {
			require.True(t, r.Code.Failed(), "a write while the link is down: %s", r.Code)
			downT = append(downT, time.Duration(r.MS*float64(time.Millisecond)))
		}
		t.Logf("%d writes in one batch while the link is down: Submit took %.1f ms, failed after %s: %s", batch, res.SubmitMS, durStats(downT), res.Result[0].Msg)

		// The link comes back: the engine redials and works again.
		p.linkSet(ns, dev, "up")
		run("ip", "netns", "exec", p.a, "tc", "qdisc", "del", "dev", p.va, "root")
		back := time.Now()
		var res2 msg
		recovered := false
		for time.Since(back) < 3*linkTimeout {
			res2 = initiator.call(msg{Cmd: "write", N: 1, Size: 64 << 10, Seed: 77, UID: 1000 + uint64(time.Since(back).Milliseconds())}, linkTimeout+40*time.Second)
			if res2.OK && res2.Result[0].Code == core.StatusSuccess {
				recovered = true
				break
			}
			time.Sleep(200 * time.Millisecond)
		}
		require.True(t, recovered, "no write succeeded within %s of the link coming back: %v", 3*linkTimeout, res2.Result)
		c := target.call(msg{Cmd: "check", Off: 0, Size: 64 << 10, Seed: 77}, 10*time.Second)
		require.True(t, c.OK, c.Err)
		t.Logf("link up again: first write intact %s later", time.Since(back).Round(time.Millisecond))
		require.Less(t, res.SubmitMS, float64((linkDial+time.Second)/time.Millisecond),
			"Submit of %d writes blocked %.0f ms with the link down (dial timeout %s, transfer timeout %s): it dials each request in turn", batch, res.SubmitMS, linkDial, linkTimeout)
	}
	t.Run("initiator side down", func(t *testing.T) { down(t, p.a, p.va, "initiator's end of the link taken down") })
	t.Run("target side down", func(t *testing.T) {
		down(t, p.b, p.vb, "target's end of the link taken down (a black hole for the initiator)")
	})
}
