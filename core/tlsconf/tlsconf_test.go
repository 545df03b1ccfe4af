package tlsconf_test

import (
	"crypto/tls"
	"errors"
	"io"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/mori-go/mori-go/core/tlsconf"
	"github.com/mori-go/mori-go/core/tlsconf/tlstest"
)

func TestLoadRefusesIncompleteOrBadFiles(t *testing.T) {
	p, err := tlsconf.Load(tlsconf.Files{})
	require.NoError(t, err)
	require.Nil(t, p, "no files: TLS off")

	_, err = tlsconf.Load(tlsconf.Files{Cert: "a.crt", Key: "a.key"})
	require.ErrorContains(t, err, "are all required")

	ca, err := tlstest.NewCA("test")
	require.NoError(t, err)
	dir := t.TempDir()
	f, err := ca.WriteFiles(dir, "e")
	require.NoError(t, err)
	p, err = tlsconf.Load(f)
	require.NoError(t, err)
	require.Equal(t, uint16(tls.VersionTLS13), p.Server.MinVersion)
	require.Equal(t, tls.RequireAnyClientCert, p.Server.ClientAuth)

	bad := f
	bad.CA = filepath.Join(dir, "empty.pem")
	require.NoError(t, os.WriteFile(bad.CA, []byte("not PEM"), 0o600))
	_, err = tlsconf.Load(bad)
	require.ErrorContains(t, err, "no PEM certificate")
	bad = f
	bad.Key = filepath.Join(dir, "missing.key")
	_, err = tlsconf.Load(bad)
	require.ErrorContains(t, err, "missing.key")
}

// handshake runs a TLS handshake between server and client configs over
// loopback TCP (bounded by a deadline) and returns the errors of both ends.
func handshake(t *testing.T, server, client *tls.Config) (serr, cerr error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	defer ln.Close()
	done := make(chan error, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			done <- err
			return
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(10 * time.Second))
		s := tls.Server(c, server)
		err = s.Handshake()
		if err == nil {
			// TLS 1.3: a rejected client certificate shows on the first read.
			_, err = s.Read(make([]byte, 1))
		}
		done <- err
	}()
	c, err := net.Dial("tcp", ln.Addr().String())
	require.NoError(t, err)
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	tc := tls.Client(c, client)
	cerr = tc.Handshake()
	if cerr == nil {
		_, cerr = tc.Write([]byte{1})
	}
	serr = <-done
	if cerr == nil {
		// The server's alert, if any, reaches the client's next read.
		_, cerr = tc.Read(make([]byte, 1))
		if errors.Is(cerr, io.EOF) {
			cerr = nil
		}
	}
	return serr, cerr
}

func TestMutualVerification(t *testing.T) {
	ca, err := tlstest.NewCA("engines")
	require.NoError(t, err)
	rogue, err := tlstest.NewCA("rogue")
	require.NoError(t, err)
	pair := func(c *tlstest.CA, name string) *tlsconf.Pair {
		p, err := c.Pair(name)
		require.NoError(t, err)
		return p
	}
	target := pair(ca, "target")
	serr, cerr := handshake(t, target.Server, pair(ca, "ini").Client)
	require.NoError(t, cerr)
	require.NoError(t, serr)

	// An initiator that trusts the engines' CA but holds a certificate of
	// another: the target refuses it.
	certPEM, keyPEM, err := rogue.Issue("ini")
	require.NoError(t, err)
	cert, err := tls.X509KeyPair(certPEM, keyPEM)
	require.NoError(t, err)
	impostor, err := tlsconf.New(cert, ca.PEM())
	require.NoError(t, err)
	serr, _ = handshake(t, target.Server, impostor.Client)
	require.ErrorContains(t, serr, "certificate signed by unknown authority")

	anon := pair(ca, "anon").Client
	anon.Certificates = nil
	serr, _ = handshake(t, target.Server, anon)
	require.ErrorContains(t, serr, "certificate")

	// A target of another CA: both ends refuse each other; whichever
	// speaks first, the initiator's handshake fails over the certificate.
	serr, cerr = handshake(t, pair(rogue, "target").Server, pair(ca, "ini").Client)
	require.ErrorContains(t, cerr, "certificate")
	require.Error(t, serr)
}
