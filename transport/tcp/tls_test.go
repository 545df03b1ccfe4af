package tcp

import (
	"bytes"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/mori-go/mori-go/core"
	"github.com/mori-go/mori-go/core/tlsconf"
	"github.com/mori-go/mori-go/core/tlsconf/tlstest"
)

// tlsNode is a node whose data plane runs over TLS with pair (nil: plain
// TCP), with an admission list that knows every key in admit.
func tlsNode(t *testing.T, key string, pair *tlsconf.Pair, admit ...string) (*node, *core.Admission) {
	t.Helper()
	adm := core.NewAdmission(0)
	for _, k := range admit {
		adm.Register(k)
	}
	n := &node{key: key, reg: core.NewRegistry(), inbound: core.NewInboundTable(64)}
	// A plain peer and a TLS server wait for each other's first bytes:
	// the handshake timeout ends it.
	b, err := New(Config{DialTimeout: ioDeadline, HandshakeTimeout: time.Second, StallTimeout: ioDeadline},
		core.BackendEnv{LocalKey: key, Host: "127.0.0.1", Registry: n.reg, Inbound: n.inbound, Admission: adm, TLS: pair, Logger: testLogger()})
	require.NoError(t, err)
	t.Cleanup(func() { b.Close() })
	n.b = b
	return n, adm
}

func testPair(t *testing.T, ca *tlstest.CA, name string) *tlsconf.Pair {
	t.Helper()
	p, err := ca.Pair(name)
	require.NoError(t, err)
	return p
}

func TestTLSTransfersBothWays(t *testing.T) {
	ca, err := tlstest.NewCA("engines")
	require.NoError(t, err)
	target, _ := tlsNode(t, "target", testPair(t, ca, "target"), "ini")
	ini, _ := tlsNode(t, "ini", testPair(t, ca, "ini"))
	require.NoError(t, ini.b.AddPeer(target.desc()))
	dst := newGuarded(t, target.reg, 1<<20)
	src := newGuarded(t, ini.reg, 1<<20)
	src.fill(5)
	st := ini.transfer(t, core.OpWrite, 1, src.r, target.key, dst.r, []core.Range{{Size: 1 << 20}})
	require.Equal(t, core.StatusSuccess, st.Code(), st.Message())
	require.Equal(t, src.mem(), dst.mem())
	back := newGuarded(t, ini.reg, 1<<20)
	st = ini.transfer(t, core.OpRead, 2, back.r, target.key, dst.r, []core.Range{{Size: 1 << 20}})
	require.Equal(t, core.StatusSuccess, st.Code(), st.Message())
	require.Equal(t, dst.mem(), back.mem())
}

// An initiator with a certificate of another CA, or with none, or a
// target with a certificate of another CA: refused in the TLS handshake,
// before a byte of the protocol, and the memory is untouched.
func TestTLSRefusesStrangers(t *testing.T) {
	ca, err := tlstest.NewCA("engines")
	require.NoError(t, err)
	rogue, err := tlstest.NewCA("rogue")
	require.NoError(t, err)
	target, adm := tlsNode(t, "target", testPair(t, ca, "target"), "ini")
	dst := newGuarded(t, target.reg, 4096)
	dst.fill(0x42)
	before := dst.snapshot()

	cases := map[string]*tlsconf.Pair{"certificate of another CA": testPair(t, rogue, "ini"), "no TLS": nil}
	refusedBefore := adm.Refused()
	for name, pair := range cases {
		t.Run(name, func(t *testing.T) {
			ini, _ := tlsNode(t, "ini", pair)
			require.Error(t, ini.b.AddPeer(target.desc()))
		})
	}
	require.GreaterOrEqual(t, adm.Refused(), refusedBefore+uint64(len(cases)), "each refused in the TLS handshake")
	require.Equal(t, before, dst.mem(), "not a byte moved")
	dst.checkGuards(t)
	_, ok := target.inbound.Pop(core.InboundKey{Peer: "ini", UID: 1})
	require.False(t, ok, "no request reached the target")

	// A client with no certificate at all (a TLS client of the right CA
	// that presents none) is refused too.
	anon := testPair(t, ca, "anon")
	anon.Client.Certificates = nil
	ini, _ := tlsNode(t, "ini", anon)
	require.ErrorContains(t, ini.b.AddPeer(target.desc()), "certificate")

	// The initiator refuses a target of another CA.
	fake, _ := tlsNode(t, "target", testPair(t, rogue, "target"), "ini")
	ini2, _ := tlsNode(t, "ini", testPair(t, ca, "ini"))
	err = ini2.b.AddPeer(fake.desc())
	require.ErrorContains(t, err, "certificate")
	require.True(t, bytes.Equal(before, dst.mem()))
}
