package control

import (
	"crypto/tls"
	"log/slog"
	"net"
	"os"
	"strconv"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/mori-go/mori-go/core"
	"github.com/mori-go/mori-go/core/tlsconf"
)

// listenTLSWith starts a TLS control plane with limits lim.
func listenTLSWith(t *testing.T, pair *tlsconf.Pair, lim tlsLimits) (*tlsServer, *handler) {
	t.Helper()
	h := &handler{me: core.EngineDesc{Key: "target", Host: "127.0.0.1"}}
	r := &responder{h: h, log: slog.New(slog.DiscardHandler)}
	s, err := listenTLS("127.0.0.1", 0, pair.Server, r, slog.New(slog.DiscardHandler), lim)
	require.NoError(t, err)
	t.Cleanup(func() { require.NoError(t, s.close()) })
	return s, h
}

// dialTLS opens a control connection with config cfg (ALPN set here).
func dialTLS(t *testing.T, port int, cfg *tls.Config) *tls.Conn {
	t.Helper()
	cfg = cfg.Clone()
	cfg.NextProtos = []string{alpn}
	c, err := tls.Dial("tcp", "127.0.0.1:"+strconv.Itoa(port), cfg)
	require.NoError(t, err)
	t.Cleanup(func() { c.Close() })
	require.NoError(t, c.SetDeadline(time.Now().Add(callTimeout)))
	return c
}

func TestTLSConnectionIsReusedPerPeer(t *testing.T) {
	ca := newCA(t, "engines")
	a, _ := listenOn(t, "a", nil, ca.pair(t, "a"))
	b, hb := listenOn(t, "b", nil, ca.pair(t, "b"))
	c := NewClient(a, nil)
	pool := c.t.(*tlsCaller)
	addr := endpoint("127.0.0.1", b.Port())

	require.NoError(t, c.Notify("127.0.0.1", b.Port(), "a", []byte("0"), callTimeout))
	require.Len(t, pool.idle[addr], 1)
	first := pool.idle[addr][0].tc
	for i := 1; i < 5; i++ {
		require.NoError(t, c.Notify("127.0.0.1", b.Port(), "a", []byte(strconv.Itoa(i)), callTimeout))
		require.Len(t, pool.idle[addr], 1)
		require.Same(t, first, pool.idle[addr][0].tc, "call %d dialled a new connection", i)
	}
	require.Equal(t, []string{"a:0", "a:1", "a:2", "a:3", "a:4"}, hb.notes)
	state := first.ConnectionState()
	require.Equal(t, uint16(tls.VersionTLS13), state.Version)
	require.Equal(t, alpn, state.NegotiatedProtocol)

	// Closing the server closes the client's connections; calls fail.
	require.NoError(t, a.Close())
	require.Empty(t, pool.idle)
	err := c.Notify("127.0.0.1", b.Port(), "a", nil, callTimeout)
	require.ErrorContains(t, err, "control plane: closed")
}

func TestTLSIdleConnectionClosedByTheServerIsNotReused(t *testing.T) {
	ca := newCA(t, "engines")
	lim := defaultTLSLimits
	lim.IdleTimeout = 50 * time.Millisecond
	s, h := listenTLSWith(t, ca.pair(t, "b"), lim)
	a, _ := listenOn(t, "a", nil, ca.pair(t, "a"))
	c := NewClient(a, nil)
	pool := c.t.(*tlsCaller)
	addr := endpoint("127.0.0.1", s.port())

	require.NoError(t, c.Notify("127.0.0.1", s.port(), "a", []byte("1"), callTimeout))
	require.Len(t, pool.idle[addr], 1)
	old := pool.idle[addr][0]
	require.Eventually(t, func() bool { return !stillOpen(old.raw) }, callTimeout, 10*time.Millisecond,
		"the server closes an idle connection")
	require.NoError(t, c.Notify("127.0.0.1", s.port(), "a", []byte("2"), callTimeout))
	require.Len(t, pool.idle[addr], 1)
	require.NotSame(t, old.tc, pool.idle[addr][0].tc, "a new connection replaced the closed one")
	require.Equal(t, []string{"a:1", "a:2"}, h.notes)
}

// A peer without a certificate of the CA is refused in the TLS handshake:
// the handler never sees its request, the refusal is counted, and the
// caller's error says the handshake failed.
func TestTLSRefusesStrangersBeforeTheHandler(t *testing.T) {
	ca, rogue := newCA(t, "engines"), newCA(t, "rogue")
	b, hb := listenOn(t, "b", nil, ca.pair(t, "b"))
	me := core.EngineDesc{Key: "m", Host: "127.0.0.1"}

	noCert := ca.pair(t, "n")
	noCert.Client = noCert.Client.Clone()
	noCert.Client.Certificates = nil
	// A client with a certificate of another CA that trusts ours: the
	// server's check alone refuses it.
	certPEM, keyPEM, err := rogue.Issue("m")
	require.NoError(t, err)
	cert, err := tls.X509KeyPair(certPEM, keyPEM)
	require.NoError(t, err)
	rogueTrustingUs, err := tlsconf.New(cert, ca.PEM())
	require.NoError(t, err)
	for name, p := range map[string]*tlsconf.Pair{"certificate of another CA": rogueTrustingUs, "no certificate": noCert} {
		t.Run(name, func(t *testing.T) {
			m, _ := listenOn(t, "m", nil, p)
			c := NewClient(m, nil)
			_, err := c.Hello("127.0.0.1", b.Port(), me, callTimeout)
			require.ErrorContains(t, err, "TLS handshake with")
			require.ErrorContains(t, err, "refused this engine's certificate")
			require.Equal(t, core.ErrConnection, core.CodeOf(err))
			err = c.Notify("127.0.0.1", b.Port(), "m", []byte("x"), callTimeout)
			require.ErrorContains(t, err, "refused this engine's certificate")
		})
	}
	// An engine of another CA altogether refuses ours first.
	m, _ := listenOn(t, "m", nil, rogue.pair(t, "m"))
	_, err = NewClient(m, nil).Hello("127.0.0.1", b.Port(), me, callTimeout)
	require.ErrorContains(t, err, "TLS handshake with")
	require.ErrorContains(t, err, "certificate signed by unknown authority")
	require.Zero(t, hb.calls(), "no request reached the handler")
	require.Eventually(t, func() bool { return b.Refused() == 5 }, callTimeout, time.Millisecond,
		"every refused handshake is counted")

	// A fake server of another CA is refused by the caller.
	fake, hf := listenOn(t, "fake", nil, rogue.pair(t, "fake"))
	a, _ := listenOn(t, "a", nil, ca.pair(t, "a"))
	_, err = NewClient(a, nil).Hello("127.0.0.1", fake.Port(), me, callTimeout)
	require.ErrorContains(t, err, "certificate signed by unknown authority")
	require.Zero(t, hf.calls())
}

func TestTLSGarbageFramesGetAnErrorReply(t *testing.T) {
	ca := newCA(t, "engines")
	pair := ca.pair(t, "x")
	s, h := listenTLSWith(t, ca.pair(t, "target"), defaultTLSLimits)
	c := dialTLS(t, s.port(), pair.Client)
	desc, err := (&core.EngineDesc{Key: "x"}).MarshalBinary()
	require.NoError(t, err)
	frames := [][]byte{
		{0},                // no parts
		{4, 0, 0, 0, 0},    // too many parts
		{1, 5, 0, 0, 0},    // a part past the end
		{1, 0, 0, 0, 0, 9}, // a byte after the last part
		appendFrame(nil, [][]byte{[]byte("HELLO"), []byte("garbage")})[4:],
		appendFrame(nil, [][]byte{[]byte("HELLO"), desc[:len(desc)-1]})[4:],
		appendFrame(nil, [][]byte{[]byte("NOTIFY"), {0xff, 0xff, 'x'}})[4:],
		appendFrame(nil, [][]byte{[]byte("WELCOME"), nil})[4:],
		appendFrame(nil, [][]byte{[]byte("PING")})[4:],
	}
	for i, f := range frames {
		out := append([]byte{byte(len(f)), byte(len(f) >> 8), 0, 0}, f...)
		_, err := c.Write(out)
		require.NoError(t, err, "frame %d", i)
		reply, err := readFrame(c)
		require.NoError(t, err, "no reply to garbage frame %d", i)
		require.Equal(t, KindError, string(reply[0]), "frame %d", i)
		require.NotEmpty(t, reply[1], "an error reply says why")
	}
	require.Zero(t, h.calls(), "garbage never reaches the handler")
	_, err = c.Write(appendFrame(nil, seal(KindPing, nil, nil)))
	require.NoError(t, err)
	reply, err := readFrame(c)
	require.NoError(t, err)
	require.Equal(t, KindPong, string(reply[0]), "still serving on the same connection")
}

func TestTLSOversizedFrameIsAnsweredAndTheConnectionClosed(t *testing.T) {
	ca := newCA(t, "engines")
	s, h := listenTLSWith(t, ca.pair(t, "target"), defaultTLSLimits)
	pair := ca.pair(t, "x")
	c := dialTLS(t, s.port(), pair.Client)
	_, err := c.Write([]byte{0xff, 0xff, 0xff, 0x7f}) // 2 GiB announced
	require.NoError(t, err)
	reply, err := readFrame(c)
	require.NoError(t, err)
	require.Equal(t, KindError, string(reply[0]))
	require.Contains(t, string(reply[1]), "frame of 2147483647 bytes, want 1..")
	_, err = readFrame(c)
	require.Error(t, err, "the connection is closed after")
	require.Zero(t, h.calls())

	// The server goes on.
	a, _ := listenOn(t, "a", nil, ca.pair(t, "a"))
	_, err = NewClient(a, nil).Hello("127.0.0.1", s.port(), core.EngineDesc{Key: "x"}, callTimeout)
	require.NoError(t, err)
}

func TestTLSSilentConnectionsAreBoundedAndCut(t *testing.T) {
	ca := newCA(t, "engines")
	lim := defaultTLSLimits
	lim.MaxPendingPerHost = 2
	lim.HandshakeTimeout = 100 * time.Millisecond
	s, _ := listenTLSWith(t, ca.pair(t, "target"), lim)
	addr := endpoint("127.0.0.1", s.port())
	var silent []net.Conn
	for range 3 {
		c, err := net.Dial("tcp", addr)
		require.NoError(t, err)
		t.Cleanup(func() { c.Close() })
		silent = append(silent, c)
	}
	for i, c := range silent {
		require.NoError(t, c.SetReadDeadline(time.Now().Add(callTimeout)))
		_, err := c.Read(make([]byte, 1))
		require.Error(t, err, "connection %d is closed by the server (over the limit, or silent past the handshake timeout)", i)
		require.NotErrorIs(t, err, os.ErrDeadlineExceeded, "connection %d", i)
	}
	require.Eventually(t, func() bool { return s.refused() == 3 }, callTimeout, time.Millisecond)
}
