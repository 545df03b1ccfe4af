// Package tlsconf builds the TLS 1.3 configurations of mutually
// authenticated engines: each engine presents a certificate issued by a
// configured CA and accepts only peers that present one too.
//
// Engines are reached at the addresses their descriptors carry, not by
// name, so certificates are verified against the CA alone (chain and
// validity dates, any key usage), without a host name check: the CA is
// the trust boundary, and every holder of one of its certificates is a
// trusted engine.
package tlsconf

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
)

// Files names the PEM files of an engine's TLS identity. All three are
// needed; all empty means TLS is off.
type Files struct {
	Cert string // the engine's certificate chain
	Key  string // its private key
	CA   string // the CA certificates that peers' certificates must chain to
}

// Enabled reports whether any file is named.
func (f Files) Enabled() bool { return f.Cert != "" || f.Key != "" || f.CA != "" }

// Pair is the server side (what accepts connections) and the client side
// (what dials) of one identity.
type Pair struct {
	Server *tls.Config
	Client *tls.Config
}

// Load reads the files and returns the pair, or nil when no file is named.
func Load(f Files) (*Pair, error) {
	if !f.Enabled() {
		return nil, nil
	}
	if f.Cert == "" || f.Key == "" || f.CA == "" {
		return nil, fmt.Errorf("tls: certificate %q, key %q and CA %q are all required", f.Cert, f.Key, f.CA)
	}
	cert, err := tls.LoadX509KeyPair(f.Cert, f.Key)
	if err != nil {
		return nil, fmt.Errorf("tls: load certificate %s and key %s: %w", f.Cert, f.Key, err)
	}
	pem, err := os.ReadFile(f.CA)
	if err != nil {
		return nil, fmt.Errorf("tls: read CA: %w", err)
	}
	return New(cert, pem)
}

// New returns the pair for certificate cert and the CA certificates in
// caPEM.
func New(cert tls.Certificate, caPEM []byte) (*Pair, error) {
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(caPEM) {
		return nil, errors.New("tls: the CA file holds no PEM certificate")
	}
	verify := func(cs tls.ConnectionState) error { return verifyPeer(cs, roots) }
	base := tls.Config{
		MinVersion:   tls.VersionTLS13,
		Certificates: []tls.Certificate{cert},
		// Chains are checked in VerifyConnection, against roots and
		// without a host name: see the package comment.
		InsecureSkipVerify: true,
		VerifyConnection:   verify,
	}
	server, client := base.Clone(), base.Clone()
	server.ClientAuth = tls.RequireAnyClientCert
	return &Pair{Server: server, Client: client}, nil
}

func verifyPeer(cs tls.ConnectionState, roots *x509.CertPool) error {
	if len(cs.PeerCertificates) == 0 {
		return errors.New("tls: the peer presented no certificate")
	}
	inter := x509.NewCertPool()
	for _, c := range cs.PeerCertificates[1:] {
		inter.AddCert(c)
	}
	_, err := cs.PeerCertificates[0].Verify(x509.VerifyOptions{
		Roots:         roots,
		Intermediates: inter,
		KeyUsages:     []x509.ExtKeyUsage{x509.ExtKeyUsageAny},
	})
	if err != nil {
		return fmt.Errorf("tls: peer certificate %q: %w", cs.PeerCertificates[0].Subject, err)
	}
	return nil
}
