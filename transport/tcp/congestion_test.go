package tcp

import (
	"net"
	"os"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/mori-go/mori-go/core"
)

// tcpConns returns the TCP connections of every stream the node opened
// (to any peer) and of every stream it accepted.
func tcpConns(t *testing.T, n *node) (opened, accepted []*net.TCPConn) {
	t.Helper()
	n.b.mu.Lock()
	for _, p := range n.b.peers {
		p.mu.Lock()
		for _, s := range p.streams {
			if s != nil {
				opened = append(opened, s.c.(*net.TCPConn))
			}
		}
		p.mu.Unlock()
	}
	n.b.mu.Unlock()
	n.b.srv.mu.Lock()
	for c := range n.b.srv.conns {
		accepted = append(accepted, c.(*net.TCPConn))
	}
	n.b.srv.mu.Unlock()
	return opened, accepted
}

// sysctl reads /proc/sys/net/ipv4/NAME.
func sysctl(t *testing.T, name string) string {
	t.Helper()
	b, err := os.ReadFile("/proc/sys/net/ipv4/" + name)
	require.NoError(t, err)
	return string(b)
}

// Config.Congestion is set on every stream, opened and accepted, and
// transfers go through; without it a stream keeps the system's.
func TestCongestionIsSetOnEveryStream(t *testing.T) {
	sys := strings.TrimSpace(sysctl(t, "tcp_congestion_control"))
	// One other than the system's, so that the test sees it set: reno is
	// always built in and allowed to every process.
	want := "reno"
	if sys == want {
		for _, cc := range strings.Fields(sysctl(t, "tcp_allowed_congestion_control")) {
			if cc != sys {
				want = cc
			}
		}
		if want == sys {
			t.Skipf("the only congestion control this process may use is the system's (%s)", sys)
		}
	}
	mod := func(c *Config) { c.Congestion = want; c.Streams = 3 }
	ini := newNode(t, "cc-initiator", nil, mod)
	target := newNode(t, "cc-target", nil, mod)
	plain := newNode(t, "cc-plain", nil, nil)
	require.NoError(t, ini.b.AddPeer(target.desc()))
	require.NoError(t, plain.b.AddPeer(target.desc()))
	src := newGuarded(t, ini.reg, 1<<20)
	src2 := newGuarded(t, plain.reg, 1<<20)
	dst := newGuarded(t, target.reg, 2<<20)
	src.fill(5)
	src2.fill(6)
	rg := []core.Range{{LocalOffset: 0, RemoteOffset: 0, Size: 1 << 20}}
	require.Equal(t, core.StatusSuccess, ini.transfer(t, core.OpWrite, 1, src.r, target.key, dst.r, rg).Code())
	rg2 := []core.Range{{LocalOffset: 0, RemoteOffset: 1 << 20, Size: 1 << 20}}
	require.Equal(t, core.StatusSuccess, plain.transfer(t, core.OpWrite, 1, src2.r, target.key, dst.r, rg2).Code())
	require.Equal(t, src.mem(), dst.mem()[:1<<20])
	require.Equal(t, src2.mem(), dst.mem()[1<<20:])

	opened, _ := tcpConns(t, ini)
	require.Len(t, opened, 3)
	for _, c := range opened {
		cc, err := congestionOf(c)
		require.NoError(t, err)
		require.Equal(t, want, cc, "a stream the initiator opened")
	}
	// The target sets its own choice on what it accepts, whoever dialed.
	_, accepted := tcpConns(t, target)
	require.GreaterOrEqual(t, len(accepted), 3+4)
	for _, c := range accepted {
		cc, err := congestionOf(c)
		require.NoError(t, err)
		require.Equal(t, want, cc, "a stream the target accepted")
	}
	// Without the option a stream has the system's.
	opened, _ = tcpConns(t, plain)
	require.NotEmpty(t, opened)
	for _, c := range opened {
		cc, err := congestionOf(c)
		require.NoError(t, err)
		require.Equal(t, sys, cc)
	}
	src.checkGuards(t)
	src2.checkGuards(t)
	dst.checkGuards(t)
}

// A congestion control the kernel does not have fails New and says which
// ones it has.
func TestUnknownCongestionFailsNew(t *testing.T) {
	_, err := New(Config{Congestion: "no-such-cc"}, core.BackendEnv{LocalKey: "cc-bad", Host: "127.0.0.1",
		Registry: core.NewRegistry(), Inbound: core.NewInboundTable(16), Logger: testLogger()})
	require.Error(t, err)
	require.Equal(t, core.ErrInvalidArgs, core.CodeOf(err))
	require.Contains(t, err.Error(), `tcp congestion control "no-such-cc" is not in this kernel (available: `)
	require.Contains(t, err.Error(), "reno")
}
