package tcp

import (
	"bufio"
	"context"
	"crypto/hmac"
	"crypto/tls"
	"fmt"
	"net"
	"time"

	"github.com/mori-go/mori-go/core"
)

// What the target does before it serves a stream: bound the connections
// per remote host that have not finished the handshake (accept), check the
// initiator's hello, admit only engines the engine knows (core.Admission)
// and bound the streams per initiator.

func remoteHost(c net.Conn) string {
	if a, ok := c.RemoteAddr().(*net.TCPAddr); ok {
		return a.IP.String()
	}
	return c.RemoteAddr().String()
}

// handshakeOver ends the pending state of a connection from host.
func (s *server) handshakeOver(host string) {
	s.mu.Lock()
	if s.pending[host]--; s.pending[host] <= 0 {
		delete(s.pending, host)
	}
	s.mu.Unlock()
}

// secure runs the TLS handshake on c when the engine has TLS (within the
// handshake timeout): a peer without a certificate of the CA is refused
// (and counted) before it has sent a byte of protocol.
func (s *server) secure(c net.Conn) (net.Conn, error) {
	if s.env.TLS == nil {
		return c, nil
	}
	tc := tls.Server(c, s.env.TLS.Server)
	ctx, cancel := context.WithTimeout(context.Background(), s.cfg.HandshakeTimeout)
	defer cancel()
	if err := tc.HandshakeContext(ctx); err != nil {
		if s.env.Admission != nil {
			s.env.Admission.CountRefusal()
		}
		return c, fmt.Errorf("TLS handshake: %w", err)
	}
	return tc, nil
}

// handshake authenticates and admits the initiator and returns its engine
// key, counted in s.live (the caller's leave undoes it).
func (s *server) handshake(c net.Conn, br *bufio.Reader) (string, error) {
	c.SetDeadline(time.Now().Add(s.cfg.HandshakeTimeout))
	defer c.SetDeadline(time.Time{})
	ch, err := newChallenge(s.env.LocalKey)
	if err != nil {
		return "", err
	}
	if _, err := c.Write(ch.encode()); err != nil {
		return "", fmt.Errorf("send challenge: %w", err)
	}
	h, err := readHello(br)
	if err != nil {
		return "", err
	}
	refuse := func(code core.StatusCode, format string, args ...any) (string, error) {
		msg := fmt.Sprintf(format, args...)
		c.Write(encodeVerdict(code, msg))
		return "", fmt.Errorf("handshake from %q: %s", h.From, msg)
	}
	if h.To != s.env.LocalKey {
		return refuse(core.ErrNotFound, "this is engine %q, not %q", s.env.LocalKey, h.To)
	}
	want := helloMAC(s.env.Secret, ch.Nonce, h.From, h.To)
	if !hmac.Equal(want[:], h.MAC[:]) {
		if len(s.env.Secret) == 0 {
			return refuse(core.ErrInvalidArgs, "authentication offered but this engine has no secret")
		}
		return refuse(core.ErrInvalidArgs, "authentication failed: wrong or missing shared secret")
	}
	if a := s.env.Admission; a != nil {
		if err := a.Check(h.From); err != nil {
			return refuse(core.CodeOf(err), "%v", err)
		}
	}
	if err := s.join(h.From); err != nil {
		return refuse(core.ErrBadState, "%v", err)
	}
	if _, err := c.Write(encodeVerdict(core.StatusSuccess, s.comp.offer())); err != nil {
		s.leave(h.From)
		return "", err
	}
	return h.From, nil
}

// join counts a stream of peer, refusing one past MaxStreamsPerPeer.
func (s *server) join(peer string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.live[peer] >= s.cfg.MaxStreamsPerPeer {
		if s.env.Admission != nil {
			s.env.Admission.CountRefusal()
		}
		return fmt.Errorf("engine %q already holds %d streams, the most this engine serves one peer", peer, s.live[peer])
	}
	s.live[peer]++
	return nil
}

// leave uncounts a stream of peer. Once no stream from it is left, no part
// of its unfinished transfers can arrive any more: they have failed on its
// side, and fail here too rather than stay in progress.
func (s *server) leave(peer string) {
	s.mu.Lock()
	s.live[peer]--
	last := s.live[peer] == 0
	if last {
		delete(s.live, peer)
	}
	s.mu.Unlock()
	if last {
		s.env.Inbound.FailPeer(peer, fmt.Sprintf("every connection from engine %q closed before the transfer completed", peer))
	}
}
