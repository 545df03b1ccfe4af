package tcp

import (
	"io"
	"net"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/mori-go/mori-go/core"
)

// admittingNode is a target whose streams go through an admission list.
func admittingNode(t *testing.T, mod func(*Config)) (*node, *core.Admission) {
	t.Helper()
	cfg := Config{DialTimeout: ioDeadline, HandshakeTimeout: ioDeadline, StallTimeout: ioDeadline}
	if mod != nil {
		mod(&cfg)
	}
	adm := core.NewAdmission(0)
	n := &node{key: "target", reg: core.NewRegistry(), inbound: core.NewInboundTable(64)}
	b, err := New(cfg, core.BackendEnv{LocalKey: n.key, Host: "127.0.0.1", Registry: n.reg, Inbound: n.inbound, Admission: adm, Logger: testLogger()})
	require.NoError(t, err)
	t.Cleanup(func() { b.Close() })
	n.b = b
	return n, adm
}

func TestStreamsOnlyFromAdmittedEngines(t *testing.T) {
	n, adm := admittingNode(t, nil)
	g := newGuarded(t, n.reg, 4096)
	g.fill(3)
	before := g.snapshot()

	p := dialRaw(t, n.addr())
	p.hello("ghost", n.key, [macLen]byte{})
	err := readVerdict(p.br)
	require.ErrorContains(t, err, `engine "ghost" is not admitted`)
	p.requireClosed()
	require.Equal(t, uint64(1), adm.Refused())

	// Through a real initiator: refused at connection time.
	ghost := newNode(t, "ghost", nil, nil)
	require.ErrorContains(t, ghost.b.AddPeer(n.desc()), "not admitted")
	require.Equal(t, before, g.mem(), "not a byte moved")

	adm.Greeted("ghost")
	require.NoError(t, ghost.b.AddPeer(n.desc()))
	src := newGuarded(t, ghost.reg, 4096)
	src.fill(9)
	st := ghost.transfer(t, core.OpWrite, 1, src.r, n.key, g.r, []core.Range{{Size: 4096}})
	require.Equal(t, core.StatusSuccess, st.Code(), st.Message())
	require.Equal(t, src.mem(), g.mem())
}

func TestStreamsPerPeerBounded(t *testing.T) {
	n, adm := admittingNode(t, func(c *Config) { c.MaxStreamsPerPeer = 2 })
	adm.Register("greedy")
	adm.Register("other")
	p1 := handshake(t, n, "greedy")
	handshake(t, n, "greedy")
	p := dialRaw(t, n.addr())
	p.hello("greedy", n.key, [macLen]byte{})
	require.ErrorContains(t, readVerdict(p.br), `engine "greedy" already holds 2 streams`)
	require.Equal(t, uint64(1), adm.Refused())
	handshake(t, n, "other") // another engine is not affected

	// A stream that ends frees its place.
	p1.c.Close()
	require.Eventually(t, func() bool {
		q := dialRaw(t, n.addr())
		q.hello("greedy", n.key, [macLen]byte{})
		return readVerdict(q.br) == nil
	}, ioDeadline, 10*time.Millisecond)
}

func TestPendingHandshakesPerHostBounded(t *testing.T) {
	n, adm := admittingNode(t, func(c *Config) { c.MaxPendingPerHost = 2 })
	adm.Register("late")
	silent1 := dialRaw(t, n.addr()) // connect, read the challenge, say nothing
	dialRaw(t, n.addr())
	c, err := net.DialTimeout("tcp", n.addr(), ioDeadline)
	require.NoError(t, err)
	defer c.Close()
	require.NoError(t, c.SetDeadline(time.Now().Add(ioDeadline)))
	_, err = io.ReadFull(c, make([]byte, 4))
	require.Error(t, err, "a third silent connection from the host is closed at once")
	require.Equal(t, uint64(1), adm.Refused())

	// Finishing a handshake frees a place.
	silent1.hello("late", n.key, [macLen]byte{})
	require.NoError(t, readVerdict(silent1.br))
	require.Eventually(t, func() bool {
		c, err := net.DialTimeout("tcp", n.addr(), ioDeadline)
		if err != nil {
			return false
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(ioDeadline))
		_, err = readChallenge(c)
		return err == nil
	}, ioDeadline, 10*time.Millisecond)
}

// The handshake of a connection that says nothing ends after the
// handshake timeout.
func TestSilentConnectionCutAfterHandshakeTimeout(t *testing.T) {
	n, _ := admittingNode(t, func(c *Config) { c.HandshakeTimeout = 200 * time.Millisecond })
	p := dialRaw(t, n.addr())
	p.requireClosed()
}
