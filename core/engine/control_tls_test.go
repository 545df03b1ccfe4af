package engine_test

import (
	"crypto/tls"
	"log/slog"
	"strconv"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/mori-go/mori-go/core"
	"github.com/mori-go/mori-go/core/control"
	"github.com/mori-go/mori-go/core/engine"
	"github.com/mori-go/mori-go/core/tlsconf"
	"github.com/mori-go/mori-go/core/tlsconf/tlstest"
	"github.com/mori-go/mori-go/stack"
)

func withTLSFiles(f tlsconf.Files) func(*stack.Config) {
	return func(c *stack.Config) { c.TLS = f }
}

// Two engines with TLS say hello, notify each other and move bytes; their
// control port speaks TLS 1.3 and takes a certificate of their CA.
func TestTLSControlPlaneBetweenEngines(t *testing.T) {
	ca, err := tlstest.NewCA("engines")
	require.NoError(t, err)
	a := newEngine(t, "ctl-tls-a", withTLSFiles(tlsFiles(t, ca, "a")))
	b := newEngine(t, "ctl-tls-b", withTLSFiles(tlsFiles(t, ca, "b")))
	require.NoError(t, a.RegisterRemoteEngine(b.Desc()))
	require.NoError(t, b.RegisterRemoteEngine(a.Desc()))

	require.NoError(t, a.Notify(b.Key(), []byte("kv ready")))
	require.NoError(t, b.Notify(a.Key(), []byte("done")))
	require.Equal(t, []engine.Notification{{From: a.Key(), Data: []byte("kv ready")}}, b.PopNotifications())
	require.Equal(t, []engine.Notification{{From: b.Key(), Data: []byte("done")}}, a.PopNotifications())

	const n = 1 << 20
	src, dst := filled(t, n, 0x5a), filled(t, n, 0)
	sd, dd := register(t, a, src), register(t, b, dst)
	st := a.Submit(core.OpWrite, []engine.Request{{Local: sd, Remote: dd, Ranges: []core.Range{{Size: n}}, UID: 1}})
	require.Equal(t, core.StatusSuccess, core.WaitAll(st, 10*time.Second), st[0].Message())
	require.Equal(t, src.Bytes(), dst.Bytes())

	p, err := ca.Pair("probe")
	require.NoError(t, err)
	c, err := tls.Dial("tcp", "127.0.0.1:"+strconv.Itoa(int(b.Desc().Port)), p.Client)
	require.NoError(t, err, "the control port speaks TLS")
	require.Equal(t, uint16(tls.VersionTLS13), c.ConnectionState().Version)
	require.NoError(t, c.Close())
}

// On the control plane a TLS engine refuses, before its handler sees a
// request: an engine of another CA, a client without a certificate, and
// an engine without TLS (TLS mismatch, said at once rather than after the
// handshake timeout); a TLS engine calling an engine without TLS fails
// saying so too.
func TestTLSControlPlaneRefusesStrangers(t *testing.T) {
	ca, err := tlstest.NewCA("engines")
	require.NoError(t, err)
	rogue, err := tlstest.NewCA("rogue")
	require.NoError(t, err)
	b := newEngine(t, "ctl-tls-target", withTLSFiles(tlsFiles(t, ca, "b")))
	slow := func(c *stack.Config) { c.HandshakeTimeout = time.Minute }

	m := newEngine(t, "ctl-mallory-rogue", func(c *stack.Config) { withTLSFiles(tlsFiles(t, rogue, "m"))(c); slow(c) })
	err = m.RegisterRemoteEngine(b.Desc())
	require.ErrorContains(t, err, "TLS handshake with")
	require.ErrorContains(t, err, "certificate signed by unknown authority")

	plain := newEngine(t, "ctl-plain", slow)
	err = plain.RegisterRemoteEngine(b.Desc())
	require.ErrorContains(t, err, "TLS mismatch")
	require.ErrorContains(t, err, "speaks TLS on its control plane and this engine has no TLS configured")
	require.Equal(t, core.ErrConnection, core.CodeOf(err))

	err = b.RegisterRemoteEngine(plain.Desc())
	require.ErrorContains(t, err, "TLS mismatch: the peer does not speak TLS")

	// A client without a certificate, sending NOTIFY and HELLO itself.
	p, err := ca.Pair("nocert")
	require.NoError(t, err)
	p.Client = p.Client.Clone()
	p.Client.Certificates = nil
	srv, err := control.Listen("127.0.0.1", 0, nil, p, nil, slog.New(slog.DiscardHandler))
	require.NoError(t, err)
	defer srv.Close()
	cl := control.NewClient(srv, nil)
	err = cl.Notify("127.0.0.1", int(b.Desc().Port), "stranger", []byte("x"), time.Minute)
	require.ErrorContains(t, err, "refused this engine's certificate")
	_, err = cl.Hello("127.0.0.1", int(b.Desc().Port), core.EngineDesc{Key: "stranger", Host: "127.0.0.1"}, time.Minute)
	require.ErrorContains(t, err, "refused this engine's certificate")

	require.Empty(t, b.PopNotifications())
	require.Eventually(t, func() bool { return b.Security().RefusedStreams >= 4 }, 10*time.Second, time.Millisecond,
		"the refused handshakes are counted")
}
