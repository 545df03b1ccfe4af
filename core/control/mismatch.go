package control

import (
	"context"
	"crypto/tls"
	"errors"
	"net"
	"syscall"

	"github.com/mori-go/mori-go/core"
)

// alpn names the control protocol in the TLS handshake: a TLS client of
// another protocol (the data plane's, on the wrong port) is refused there.
const alpn = "mori-go-control/1"

// errPlainPeer says that a TLS handshake met a peer without TLS.
func errPlainPeer(addr string, err error) error {
	return core.Errorf(core.ErrConnection,
		"control plane: TLS handshake with %s failed: TLS mismatch: the peer does not speak TLS "+
			"(this engine has TLS configured and that one apparently not; configure the same CA on both): %w", addr, err)
}

// errTLSPeer says that a call without TLS met a peer speaking TLS.
func errTLSPeer(addr string) error {
	return core.Errorf(core.ErrConnection,
		"control plane: TLS mismatch: the engine at %s speaks TLS on its control plane and this engine "+
			"has no TLS configured (configure a certificate, key and the same CA on both)", addr)
}

// isPlainPeer reports whether a TLS handshake error means the peer does
// not speak TLS: it sent something that is not TLS (a ZeroMQ greeting), or
// reset the connection on our ClientHello (a ZeroMQ control plane refuses
// it as a ZMTP 1.0 opening, zmq.go; a TLS server answers with an alert).
func isPlainPeer(err error) bool {
	var rh tls.RecordHeaderError
	return errors.As(err, &rh) || errors.Is(err, syscall.ECONNRESET)
}

// probeTLS tells a call over ZeroMQ that got no answer in time whether
// the engine at addr speaks TLS instead: it offers a TLS 1.3 ClientHello
// and returns errTLSPeer if a TLS server answers, nil otherwise (a ZeroMQ
// peer answers with its greeting, which is not TLS). Nothing is sent over
// the connection after the handshake, so the server's certificate needs no
// checking, and the server refuses this certificate-less client.
func probeTLS(ctx context.Context, addr string) error {
	var d net.Dialer
	conn, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil
	}
	defer conn.Close()
	tc := tls.Client(conn, &tls.Config{
		MinVersion:         tls.VersionTLS13,
		InsecureSkipVerify: true, // only whether it answers in TLS matters
		NextProtos:         []string{alpn},
	})
	err = tc.HandshakeContext(ctx)
	if err == nil || isRemoteAlert(err) {
		return errTLSPeer(addr)
	}
	return nil
}

// isRemoteAlert reports whether err is a TLS alert sent by the peer.
func isRemoteAlert(err error) bool {
	var op *net.OpError
	return errors.As(err, &op) && op.Op == "remote error"
}

// describeTLSFailure wraps an error of a TLS connection that has not yet
// carried a reply: a failed or refused handshake.
func describeTLSFailure(addr string, err error) error {
	switch {
	case isPlainPeer(err):
		return errPlainPeer(addr, err)
	case isRemoteAlert(err):
		return core.Errorf(core.ErrConnection,
			"control plane: TLS handshake with %s failed: the engine refused this engine's certificate "+
				"(not issued by its CA, or none): %w", addr, err)
	}
	return core.Errorf(core.ErrConnection, "control plane: TLS handshake with %s failed: %w", addr, err)
}
