package faults

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"os"
	"runtime"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/mori-go/mori-go/core"
	"github.com/mori-go/mori-go/core/engine"
	"github.com/mori-go/mori-go/internal/hostmem"
	"github.com/mori-go/mori-go/internal/procstat"
	"github.com/mori-go/mori-go/stack"
	"github.com/mori-go/mori-go/transport/tcp"
)

// Test timeouts: short enough that a fault test fails fast, long enough for
// the race detector on a 2-core machine.
const (
	transferTimeout = 10 * time.Second
	stallTimeout    = 3 * time.Second
	dialTimeout     = 2 * time.Second
	// waitSlack is added to a transfer's timeout when a test waits for its
	// status: the status must be terminal by then.
	waitSlack = 3 * time.Second
)

// testLogger discards logs unless MORI_TEST_LOG is set.
func testLogger() *slog.Logger {
	if os.Getenv("MORI_TEST_LOG") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.DiscardHandler)
}

type opt func(*stack.Config)

func withSecret(s string) opt {
	return func(c *stack.Config) {
		if s == "" {
			c.Secret = nil
		} else {
			c.Secret = []byte(s)
		}
	}
}

func withTimeout(d time.Duration) opt { return func(c *stack.Config) { c.TransferTimeout = d } }

func withStreams(n int) opt { return func(c *stack.Config) { c.TCP.Streams = n } }

// baseConfig is the engine configuration the tests start from.
func baseConfig(key string, opts ...opt) stack.Config {
	cfg := stack.Config{Config: engine.Config{
		Key:              key,
		TransferTimeout:  transferTimeout,
		HandshakeTimeout: 5 * time.Second,
		Logger:           testLogger(),
	}, TCP: tcpConfig()}
	for _, o := range opts {
		o(&cfg)
	}
	return cfg
}

// tcpConfig is the data plane configuration of the tests.
func tcpConfig() tcp.Config {
	return tcp.Config{StallTimeout: stallTimeout, DialTimeout: dialTimeout, HandshakeTimeout: 5 * time.Second}
}

// startEngine starts an engine with a TCP backend; the caller closes it.
func startEngine(cfg stack.Config) (*engine.Engine, error) {
	e, err := stack.New(cfg)
	if err != nil {
		return nil, err
	}
	if _, err := e.CreateBackend(core.BackendTCP, nil); err != nil {
		e.Close()
		return nil, err
	}
	return e, nil
}

// env owns a test's engines and memory. Its clean-up closes every engine
// before it unmaps any memory, so that nothing a peer still sends lands in
// unmapped memory, whatever order the test made them in.
type env struct {
	t       testing.TB
	mu      sync.Mutex
	engines []*engine.Engine
	bufs    []*hostmem.Buffer
}

func newEnv(t testing.TB) *env {
	v := &env{t: t}
	t.Cleanup(func() {
		v.mu.Lock()
		defer v.mu.Unlock()
		for _, e := range v.engines {
			e.Close()
		}
		for _, b := range v.bufs {
			b.Free()
		}
	})
	return v
}

// engine starts an engine with a TCP backend, closed at the end of the test.
func (v *env) engine(key string, opts ...opt) *engine.Engine {
	v.t.Helper()
	e, err := startEngine(baseConfig(key, opts...))
	require.NoError(v.t, err)
	v.mu.Lock()
	v.engines = append(v.engines, e)
	v.mu.Unlock()
	return e
}

// alloc maps n zeroed bytes outside the Go heap.
func (v *env) alloc(n int) *hostmem.Buffer {
	v.t.Helper()
	m, err := hostmem.Alloc(n)
	require.NoError(v.t, err)
	v.mu.Lock()
	v.bufs = append(v.bufs, m)
	v.mu.Unlock()
	return m
}

// link registers a and b with each other.
func link(t testing.TB, a, b *engine.Engine) {
	t.Helper()
	require.NoError(t, a.RegisterRemoteEngine(b.Desc()))
	require.NoError(t, b.RegisterRemoteEngine(a.Desc()))
}

func register(t testing.TB, e *engine.Engine, m *hostmem.Buffer) core.MemoryDesc {
	t.Helper()
	d, err := e.RegisterMemory(m.Addr(), uint64(m.Len()), -1, core.LocationCPU)
	require.NoError(t, err)
	return d
}

// fillPattern fills b with bytes that depend on seed only.
func fillPattern(b []byte, seed uint64) {
	r := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	i := 0
	for ; i+8 <= len(b); i += 8 {
		binary.LittleEndian.PutUint64(b[i:], r.Uint64())
	}
	if i < len(b) {
		v := r.Uint64()
		for k := 0; i+k < len(b); k++ {
			b[i+k] = byte(v >> (8 * k))
		}
	}
}

// checkPattern compares b with fillPattern(seed), byte for byte, and
// names the first difference.
func checkPattern(b []byte, seed uint64) error {
	want := make([]byte, len(b))
	fillPattern(want, seed)
	if bytes.Equal(b, want) {
		return nil
	}
	for i := range b {
		if b[i] != want[i] {
			return fmt.Errorf("byte %d of %d: got %#x, want %#x", i, len(b), b[i], want[i])
		}
	}
	return nil
}

// firstNot returns the index of the first byte of b that is not v, or -1.
func firstNot(b []byte, v byte) int {
	for i, x := range b {
		if x != v {
			return i
		}
	}
	return -1
}

// poison fills b with v (by doubling copies: quick under the race
// detector, which checks a copy once rather than byte by byte).
func poison(b []byte, v byte) {
	if len(b) == 0 {
		return
	}
	b[0] = v
	for n := 1; n < len(b); n *= 2 {
		copy(b[n:], b[:n])
	}
}

// ended records when each status became terminal.
type ended struct {
	mu   sync.Mutex
	at   []time.Time
	wg   sync.WaitGroup
	stat []*core.Status
}

func watchEnds(sts []*core.Status) *ended {
	e := &ended{at: make([]time.Time, len(sts)), stat: sts}
	for i, st := range sts {
		e.wg.Add(1)
		go func() {
			defer e.wg.Done()
			select {
			case <-st.Done():
			case <-time.After(2 * time.Minute): // never hang; the test fails on a zero time
				return
			}
			e.mu.Lock()
			e.at[i] = time.Now()
			e.mu.Unlock()
		}()
	}
	return e
}

// wait returns once every status is terminal or timeout passed; it reports
// whether all are terminal.
func (e *ended) wait(timeout time.Duration) bool {
	done := make(chan struct{})
	go func() { e.wg.Wait(); close(done) }()
	select {
	case <-done:
		return true
	case <-time.After(timeout):
		return false
	}
}

func (e *ended) times() []time.Time {
	e.mu.Lock()
	defer e.mu.Unlock()
	return slices.Clone(e.at)
}

// durStats summarises durations for the logs.
func durStats(ds []time.Duration) string {
	if len(ds) == 0 {
		return "none"
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	return fmt.Sprintf("n=%d min=%s median=%s max=%s", len(s), s[0].Round(time.Microsecond), s[len(s)/2].Round(time.Microsecond), s[len(s)-1].Round(time.Microsecond))
}

// figures is a sample of the process's resources.
type figures struct {
	HeapInuse  uint64
	HeapSys    uint64
	Sys        uint64
	RSS        uint64
	Goroutines int
	FDs        int
}

func sample() figures {
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return figures{HeapInuse: ms.HeapInuse, HeapSys: ms.HeapSys, Sys: ms.Sys, RSS: procstat.RSS(), Goroutines: runtime.NumGoroutine(), FDs: procstat.FDs()}
}

func (f figures) String() string {
	return fmt.Sprintf("heap in use %s, heap sys %s, sys %s, RSS %s, goroutines %d, fds %d",
		mib(f.HeapInuse), mib(f.HeapSys), mib(f.Sys), mib(f.RSS), f.Goroutines, f.FDs)
}

func mib(n uint64) string { return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20)) }

// settled collects garbage and waits (up to timeout) until the goroutine
// count is at most limit, then samples.
func settled(limit int, timeout time.Duration) figures {
	deadline := time.Now().Add(timeout)
	for {
		runtime.GC()
		runtime.GC() // a second cycle empties the sync.Pools' victim caches
		f := sample()
		if f.Goroutines <= limit || time.Now().After(deadline) {
			return f
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// peakSampler samples the process every interval and keeps the maxima.
type peakSampler struct {
	stop chan struct{}
	done chan struct{}
	peak figures
}

func startPeakSampler(interval time.Duration) *peakSampler {
	p := &peakSampler{stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(p.done)
		t := time.NewTicker(interval)
		defer t.Stop()
		for {
			f := sample()
			p.peak.HeapInuse = max(p.peak.HeapInuse, f.HeapInuse)
			p.peak.HeapSys = max(p.peak.HeapSys, f.HeapSys)
			p.peak.Sys = max(p.peak.Sys, f.Sys)
			p.peak.RSS = max(p.peak.RSS, f.RSS)
			p.peak.Goroutines = max(p.peak.Goroutines, f.Goroutines)
			p.peak.FDs = max(p.peak.FDs, f.FDs)
			select {
			case <-p.stop:
				return
			case <-t.C:
			}
		}
	}()
	return p
}

func (p *peakSampler) finish() figures {
	close(p.stop)
	<-p.done
	return p.peak
}

// write submits one write of a single range and returns its status.
func write(e *engine.Engine, local, remote core.MemoryDesc, loff, roff, size uint64) *core.Status {
	return e.Submit(core.OpWrite, []engine.Request{{Local: local, Remote: remote, Ranges: []core.Range{{LocalOffset: loff, RemoteOffset: roff, Size: size}}, UID: e.AllocateTransferUID()}})[0]
}

// read submits one read of a single range and returns its status.
func read(e *engine.Engine, local, remote core.MemoryDesc, loff, roff, size uint64) *core.Status {
	return e.Submit(core.OpRead, []engine.Request{{Local: local, Remote: remote, Ranges: []core.Range{{LocalOffset: loff, RemoteOffset: roff, Size: size}}, UID: e.AllocateTransferUID()}})[0]
}

// requireSuccess waits for st with a hard deadline and requires success.
func requireSuccess(t testing.TB, st *core.Status, what string) {
	t.Helper()
	c := st.Wait(transferTimeout + waitSlack)
	require.Equal(t, core.StatusSuccess, c, "%s: %s", what, st.Message())
}
