package control

import (
	"context"
	"testing"

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
