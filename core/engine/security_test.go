package engine_test

import (
	"bytes"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/mori-go/mori-go/core"
	"github.com/mori-go/mori-go/core/engine"
	"github.com/mori-go/mori-go/core/tlsconf"
	"github.com/mori-go/mori-go/core/tlsconf/tlstest"
	"github.com/mori-go/mori-go/internal/hostmem"
	"github.com/mori-go/mori-go/stack"
	"github.com/mori-go/mori-go/transport/tcp"
)

func filled(t *testing.T, n int, b byte) *hostmem.Buffer {
	m := alloc(t, n)
	for i := range m.Bytes() {
		m.Bytes()[i] = b
	}
	return m
}

// refused submits one transfer and requires that it fails saying want. A
// refusal for a wrong token also drops the stream: a transfer submitted
// before the initiator noticed, or while every stream is down, fails with
// a connection error and is submitted again.
func refused(t *testing.T, e *engine.Engine, op core.Op, local, remote core.MemoryDesc, size uint64, want string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		st := e.Submit(op, []engine.Request{{Local: local, Remote: remote, Ranges: []core.Range{{Size: size}}, UID: e.AllocateTransferUID()}})
		require.True(t, core.WaitAll(st, 10*time.Second).Failed(), "%s of memory %d was not refused", op, remote.ID)
		msg := st[0].Message()
		if (strings.Contains(msg, "streams are down") || strings.Contains(msg, " lost")) && time.Now().Before(deadline) {
			time.Sleep(5 * time.Millisecond)
			continue
		}
		require.Contains(t, msg, want)
		return
	}
}

// The attack of issue 12: a third process that knows only the target's
// engine descriptor registers it (no secret: the hello is open to
// anyone), forges memory descriptors with guessed ids and sizes, and
// writes and reads. Every access is refused, not a byte moves either way,
// each refusal is counted, and the engine goes on serving its real peer.
func TestStrangerWithGuessedDescriptorsRefused(t *testing.T) {
	a, b := pair(t, nil)
	const n = 4096
	var victims []*hostmem.Buffer
	var descs []core.MemoryDesc
	for i := range 3 {
		m := filled(t, n, byte(0x70+i))
		victims = append(victims, m)
		descs = append(descs, register(t, b, m))
	}
	mallory := newEngine(t, "mallory", nil)
	require.NoError(t, mallory.RegisterRemoteEngine(b.Desc()))
	src, back := filled(t, n, 0x41), filled(t, n, 0)
	sd, bd := register(t, mallory, src), register(t, mallory, back)

	for id := uint32(1); id <= 5; id++ {
		for _, size := range []uint64{n, 16} {
			forged := core.MemoryDesc{EngineKey: b.Key(), ID: id, Location: core.LocationCPU, Size: size}
			want := "access denied"
			if id > 3 {
				want = "not registered"
			}
			refused(t, mallory, core.OpWrite, sd, forged, size, want)
			refused(t, mallory, core.OpRead, bd, forged, size, want)
		}
	}
	for i, m := range victims {
		require.Equal(t, bytes.Repeat([]byte{byte(0x70 + i)}, n), m.Bytes(), "victim %d untouched", i)
	}
	require.Equal(t, make([]byte, n), back.Bytes(), "nothing was read")
	require.Equal(t, uint64(3*2*2), b.Security().DeniedAccesses)

	// The real peer is served as before.
	st := a.Submit(core.OpWrite, []engine.Request{{Local: register(t, a, filled(t, n, 9)), Remote: descs[1], Ranges: []core.Range{{Size: n}}, UID: 1}})
	require.Equal(t, core.StatusSuccess, core.WaitAll(st, 10*time.Second), st[0].Message())
	require.Equal(t, bytes.Repeat([]byte{9}, n), victims[1].Bytes())
}

// A descriptor of region A with its id changed to region B's: the token
// is A's, and B refuses it.
func TestTokenOfOneRegionRefusedOnAnother(t *testing.T) {
	a, b := pair(t, nil)
	const n = 4096
	regionA, regionB := filled(t, n, 0xAA), filled(t, n, 0xBB)
	da, db := register(t, b, regionA), register(t, b, regionB)
	src, back := filled(t, n, 1), filled(t, n, 0)
	sd, bd := register(t, a, src), register(t, a, back)
	forged := da
	forged.ID = db.ID
	refused(t, a, core.OpWrite, sd, forged, n, "access denied")
	refused(t, a, core.OpRead, bd, forged, n, "access denied")
	require.Equal(t, bytes.Repeat([]byte{0xAA}, n), regionA.Bytes())
	require.Equal(t, bytes.Repeat([]byte{0xBB}, n), regionB.Bytes())
	require.Equal(t, make([]byte, n), back.Bytes())
	require.Equal(t, uint64(2), b.Security().DeniedAccesses)
}

// Deregistering invalidates the descriptor; registering the same memory
// again gives a new one, and the old token does not open it.
func TestDeregisteredTokenRefused(t *testing.T) {
	a, b := pair(t, nil)
	const n = 4096
	dst := filled(t, n, 0x33)
	old := register(t, b, dst)
	src := filled(t, n, 7)
	sd := register(t, a, src)
	require.NoError(t, b.DeregisterMemory(old))
	refused(t, a, core.OpWrite, sd, old, n, "not registered")

	fresh := register(t, b, dst)
	require.NotEqual(t, old.ID, fresh.ID)
	require.False(t, old.Token.Equal(fresh.Token), "a new registration has a new token")
	stale := old
	stale.ID = fresh.ID
	refused(t, a, core.OpWrite, sd, stale, n, "access denied")
	require.Equal(t, bytes.Repeat([]byte{0x33}, n), dst.Bytes(), "not a byte moved")

	st := a.Submit(core.OpWrite, []engine.Request{{Local: sd, Remote: fresh, Ranges: []core.Range{{Size: n}}, UID: 99}})
	require.Equal(t, core.StatusSuccess, core.WaitAll(st, 10*time.Second), st[0].Message())
	require.Equal(t, src.Bytes(), dst.Bytes())
}

// A data plane that skips the control-plane hello is not served.
func TestDataStreamWithoutHelloRefused(t *testing.T) {
	b := newEngine(t, "target", nil)
	dst := filled(t, 4096, 0x55)
	register(t, b, dst)
	ghost, err := tcp.New(tcp.Config{}, core.BackendEnv{LocalKey: "ghost", Host: "127.0.0.1",
		Registry: core.NewRegistry(), Inbound: core.NewInboundTable(8), Logger: b.Logger()})
	require.NoError(t, err)
	defer ghost.Close()
	require.ErrorContains(t, ghost.AddPeer(b.Desc()), `engine "ghost" is not admitted`)
	require.Positive(t, b.Security().RefusedStreams)
	require.Equal(t, bytes.Repeat([]byte{0x55}, 4096), dst.Bytes())
}

func tlsFiles(t *testing.T, ca *tlstest.CA, name string) tlsconf.Files {
	t.Helper()
	f, err := ca.WriteFiles(t.TempDir(), name)
	require.NoError(t, err)
	return f
}

// With TLS, engines of one CA move bytes; an engine with a certificate of
// another CA, or without TLS, is refused in the TLS handshake (of the
// control plane, which comes first: TestTLSControlPlaneRefusesStrangers),
// before any memory is touched.
func TestTLSBetweenEngines(t *testing.T) {
	ca, err := tlstest.NewCA("engines")
	require.NoError(t, err)
	rogue, err := tlstest.NewCA("rogue")
	require.NoError(t, err)
	withTLS := func(f tlsconf.Files) func(*stack.Config) { return func(c *stack.Config) { c.TLS = f } }
	a := newEngine(t, "tls-a", withTLS(tlsFiles(t, ca, "a")))
	b := newEngine(t, "tls-b", withTLS(tlsFiles(t, ca, "b")))
	require.NoError(t, a.RegisterRemoteEngine(b.Desc()))
	const n = 1 << 20
	src, dst := filled(t, n, 0x61), filled(t, n, 0)
	sd, dd := register(t, a, src), register(t, b, dst)
	st := a.Submit(core.OpWrite, []engine.Request{{Local: sd, Remote: dd, Ranges: []core.Range{{Size: n}}, UID: 1}})
	require.Equal(t, core.StatusSuccess, core.WaitAll(st, 10*time.Second), st[0].Message())
	require.Equal(t, src.Bytes(), dst.Bytes())

	snapshot := append([]byte(nil), dst.Bytes()...)
	for name, mod := range map[string]func(*stack.Config){
		"certificate of another CA": withTLS(tlsFiles(t, rogue, "m")),
		"no TLS":                    func(c *stack.Config) { c.TCP.DialTimeout = 2 * time.Second },
	} {
		t.Run(name, func(t *testing.T) {
			m := newEngine(t, "mallory-"+strings.ReplaceAll(name, " ", "-"), mod)
			require.Error(t, m.RegisterRemoteEngine(b.Desc()))
		})
	}
	require.Equal(t, snapshot, dst.Bytes(), "not a byte moved")
	require.Positive(t, b.Security().RefusedStreams)

	_, err = engine.New(engine.Config{Key: "half", TLS: tlsconf.Files{Cert: "x.crt"}})
	require.ErrorContains(t, err, "are all required")
}
