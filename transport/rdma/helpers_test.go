package rdma_test

import (
	"io"
	"log/slog"
	"os"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/mori-go/mori-go/core"
	"github.com/mori-go/mori-go/core/engine"
	"github.com/mori-go/mori-go/internal/hostmem"
	"github.com/mori-go/mori-go/stack"
	"github.com/mori-go/mori-go/transport/rdma"
	"github.com/mori-go/mori-go/verbs/sim"
)

// noEnv keeps the host's MORI_* variables out of the tests.
func noEnv(string) string { return "" }

func testLogger() *slog.Logger {
	if os.Getenv("MORI_GO_TEST_LOG") == "" {
		return slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

type engineOpts struct {
	cfg     rdma.Config
	opts    rdma.Options
	timeout time.Duration
	gpu     core.GPU
}

func defaultRDMA() rdma.Config {
	return rdma.Config{QPPerTransfer: 4, PostBatchSize: 8, EnableNotification: true}
}

// newSimEngine starts an engine whose RDMA backend runs on host h.
func newSimEngine(t testing.TB, key string, h *sim.Host, o engineOpts) *engine.Engine {
	t.Helper()
	if o.timeout == 0 {
		o.timeout = 20 * time.Second
	}
	if o.opts.Getenv == nil {
		o.opts.Getenv = noEnv
	}
	e, err := stack.New(stack.Config{Config: engine.Config{
		Key: key, Mode: engine.ModeRDMA,
		TransferTimeout: o.timeout, Logger: testLogger(), GPU: o.gpu,
	}, RDMA: rdma.NewFactory(h, o.opts)})
	require.NoError(t, err)
	t.Cleanup(func() { require.NoError(t, e.Close()) })
	typ, err := e.CreateBackend(core.BackendRDMA, o.cfg)
	require.NoError(t, err)
	require.Equal(t, core.BackendRDMA, typ)
	return e
}

type simPair struct {
	fab    *sim.Fabric
	ha, hb *sim.Host
	a, b   *engine.Engine
}

// newSimPair returns two engines on two hosts of one fabric, registered
// with each other.
func newSimPair(t *testing.T, o engineOpts, nics ...sim.NIC) *simPair {
	t.Helper()
	if len(nics) == 0 {
		nics = []sim.NIC{{Name: "mlx5_0"}}
	}
	if o.cfg == (rdma.Config{}) {
		o.cfg = defaultRDMA()
	}
	p := &simPair{fab: sim.NewFabric(sim.Config{})}
	p.ha = p.fab.AddHost("prefill", nics...)
	p.hb = p.fab.AddHost("decode", nics...)
	p.a = newSimEngine(t, "prefill-"+t.Name(), p.ha, o)
	p.b = newSimEngine(t, "decode-"+t.Name(), p.hb, o)
	require.NoError(t, p.a.RegisterRemoteEngine(p.b.Desc()))
	require.NoError(t, p.b.RegisterRemoteEngine(p.a.Desc()))
	return p
}

func alloc(t testing.TB, n int) *hostmem.Buffer {
	t.Helper()
	m, err := hostmem.Alloc(n)
	require.NoError(t, err)
	t.Cleanup(func() { m.Free() })
	return m
}

func register(t testing.TB, e *engine.Engine, m *hostmem.Buffer) core.MemoryDesc {
	t.Helper()
	d, err := e.RegisterMemory(m.Addr(), uint64(m.Len()), -1, core.LocationCPU)
	require.NoError(t, err)
	return d
}

func fill(b []byte, seed byte) {
	for i := range b {
		b[i] = byte(i*7) + seed
	}
}

// inbound waits until the target knows the outcome of (peer, uid).
func inbound(t *testing.T, e *engine.Engine, peer string, uid uint64) core.InboundStatus {
	t.Helper()
	var st core.InboundStatus
	require.Eventually(t, func() bool {
		s, ok := e.PopInboundTransferStatus(peer, uid)
		if ok && s.Code.Terminal() {
			st = s
			return true
		}
		return false
	}, 10*time.Second, time.Millisecond, "no inbound status for uid %d from %q", uid, peer)
	return st
}

func write(t testing.TB, e *engine.Engine, uid uint64, local, remote core.MemoryDesc, ranges ...core.Range) *core.Status {
	t.Helper()
	return e.Submit(core.OpWrite, []engine.Request{{Local: local, Remote: remote, Ranges: ranges, UID: uid}})[0]
}

func read(t *testing.T, e *engine.Engine, uid uint64, local, remote core.MemoryDesc, ranges ...core.Range) *core.Status {
	t.Helper()
	return e.Submit(core.OpRead, []engine.Request{{Local: local, Remote: remote, Ranges: ranges, UID: uid}})[0]
}

var nic0 = sim.NIC{Name: "mlx5_0"}

func newFabric() *sim.Fabric { return sim.NewFabric(sim.Config{}) }

// newBareEngine starts an engine without a backend.
func newBareEngine(t *testing.T, key string, h *sim.Host) *engine.Engine {
	t.Helper()
	e, err := stack.New(stack.Config{Config: engine.Config{
		Key: key, Mode: engine.ModeRDMA,
		TransferTimeout: 20 * time.Second, Logger: testLogger(),
	}, RDMA: rdma.NewFactory(h, rdma.Options{Getenv: noEnv})})
	require.NoError(t, err)
	t.Cleanup(func() { require.NoError(t, e.Close()) })
	return e
}

func createRDMA(t *testing.T, e *engine.Engine, cfg rdma.Config) {
	t.Helper()
	typ, err := e.CreateBackend(core.BackendRDMA, cfg)
	require.NoError(t, err)
	require.Equal(t, core.BackendRDMA, typ)
}
