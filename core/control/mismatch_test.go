package control

import (
	"context"
	"net"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/mori-go/mori-go/core"
)

// An engine with TLS and one without cannot talk: either way round the
// call fails with an error naming the TLS mismatch, not with the timeout
// (whose error says "no answer"), and neither handler sees a request.
func TestTLSMismatchFailsWithAClearError(t *testing.T) {
	ca := newCA(t, "engines")
	withTLS, ht := listenOn(t, "tls", nil, ca.pair(t, "tls"))
	plain, hp := listenOn(t, "plain", nil, nil)
	me := core.EngineDesc{Key: "x", Host: "127.0.0.1"}

	_, err := NewClient(plain, nil).Hello("127.0.0.1", withTLS.Port(), me, callTimeout)
	require.ErrorContains(t, err, "TLS mismatch: the engine at 127.0.0.1:")
	require.ErrorContains(t, err, "speaks TLS on its control plane and this engine has no TLS configured")
	require.Equal(t, core.ErrConnection, core.CodeOf(err))

	_, err = NewClient(withTLS, nil).Hello("127.0.0.1", plain.Port(), me, callTimeout)
	require.ErrorContains(t, err, "TLS handshake with 127.0.0.1:")
	require.ErrorContains(t, err, "TLS mismatch: the peer does not speak TLS")
	require.Equal(t, core.ErrConnection, core.CodeOf(err))

	require.Zero(t, ht.calls())
	require.Zero(t, hp.calls())
}

// A ZeroMQ call to a port where nothing answers still ends with the
// timeout: the probe finds no TLS there.
func TestProbeFindsNoTLSOnAZMQPeer(t *testing.T) {
	plain, _ := listenOn(t, "plain", nil, nil)
	ctx, cancel := context.WithTimeout(context.Background(), callTimeout)
	defer cancel()
	require.NoError(t, probeTLS(ctx, endpoint("127.0.0.1", plain.Port())))
}

// Strangers that open the ZeroMQ control port with bytes that are not a
// ZMTP 3 greeting (a TLS ClientHello: what a TLS engine's call or the
// probe sends; a ZMTP 1.0 routing id) are turned away without harm: libzmq
// 4.3.4 could abort the whole process on the old handshakes these start,
// so the server refuses ZMTP 1.0 and 2.0. The server still answers calls.
func TestOldHandshakesDoNotCrashTheServer(t *testing.T) {
	plain, hp := listenOn(t, "plain", nil, nil)
	hellos := [][]byte{
		{0x16, 0x03, 0x01, 0x00, 0x2f, 0x01, 0x00, 0x00, 0x2b, 0x03, 0x03}, // TLS ClientHello start
		{0x01, 0x00, 0x05, 0x00, 'h', 'e', 'l', 'l'},                       // ZMTP 1.0: empty routing id, a frame
		{0xff, 0, 0, 0, 0, 0, 0, 0, 1, 0x7f, 0x01, 0x05},                   // ZMTP 2.0 signature, revision 1
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*callTimeout)
	defer cancel()
	for i := range 300 {
		if i%3 == 0 { // a whole TLS handshake attempt, as the probe makes
			require.NoError(t, probeTLS(ctx, endpoint("127.0.0.1", plain.Port())))
			continue
		}
		c, err := net.DialTimeout("tcp", endpoint("127.0.0.1", plain.Port()), callTimeout)
		require.NoError(t, err)
		c.Write(hellos[i%len(hellos)])
		if i%2 == 0 {
			// Read the server's greeting first: its session is set up by now.
			c.SetReadDeadline(time.Now().Add(callTimeout))
			var b [1]byte
			c.Read(b[:])
		}
		c.Close()
	}
	me := core.EngineDesc{Key: "x", Host: "127.0.0.1"}
	_, err := NewClient(plain, nil).Hello("127.0.0.1", plain.Port(), me, callTimeout)
	require.NoError(t, err)
	require.Equal(t, 1, hp.calls())
}
