package control

import (
	"time"

	"github.com/mori-go/mori-go/core"
)

// Client sends requests to other engines' control planes, over the
// transport of the server it was made from. It is safe for concurrent use.
type Client struct {
	t      caller
	secret []byte
}

// NewClient returns a client of server s: over ZeroMQ it shares the
// server's zmq context, over TLS it dials with the server's identity.
// Closing s closes the client's connections.
func NewClient(s *Server, secret []byte) *Client {
	c := &Client{secret: secret}
	if s.tls != nil {
		c.t = newTLSCaller(s.tls.Client, defaultTLSLimits)
	} else {
		c.t = &zmqCaller{ctx: s.zmq.ctx}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		c.t.close()
	}
	s.clients = append(s.clients, c)
	return c
}

// Call sends one request to host:port and waits up to timeout for the reply.
func (c *Client) Call(host string, port int, kind string, body []byte, timeout time.Duration) (string, []byte, error) {
	reply, err := c.t.call(host, port, seal(kind, body, c.secret), timeout)
	if err != nil {
		return "", nil, err
	}
	ep := endpoint(host, port)
	rk, rb, err := open(reply, c.secret)
	if err != nil {
		return "", nil, core.Errorf(core.ErrConnection, "control plane: reply from %s: %w", ep, err)
	}
	if rk == KindError {
		return rk, rb, core.Errorf(core.ErrRemote, "engine at %s refused %s: %s", ep, kind, rb)
	}
	return rk, rb, nil
}

// Hello registers this engine (me) with the engine at host:port and returns
// that engine's descriptor.
func (c *Client) Hello(host string, port int, me core.EngineDesc, timeout time.Duration) (core.EngineDesc, error) {
	var peer core.EngineDesc
	b, err := me.MarshalBinary()
	if err != nil {
		return peer, err
	}
	kind, body, err := c.Call(host, port, KindHello, b, timeout)
	if err != nil {
		return peer, err
	}
	if kind != KindWelcome {
		return peer, core.Errorf(core.ErrConnection, "control plane: %s:%d answered %s to HELLO", host, port, kind)
	}
	if err := peer.UnmarshalBinary(body); err != nil {
		return peer, core.Errorf(core.ErrConnection, "control plane: welcome from %s:%d: %w", host, port, err)
	}
	return peer, nil
}

// maxPayload bounds the message of a NOTIFY or BACKEND request, so that
// the whole request stays within MaxMessage.
const maxPayload = MaxMessage - core.MaxKeyLen - 64

// Backend sends a backend set-up message to the engine at host:port, as
// engine from, and returns the answer.
func (c *Client) Backend(host string, port int, from string, msg []byte, timeout time.Duration) ([]byte, error) {
	if len(msg) > maxPayload {
		return nil, core.Errorf(core.ErrInvalidArgs, "backend message of %d bytes, at most %d", len(msg), maxPayload)
	}
	kind, body, err := c.Call(host, port, KindBackend, encodeNotify(from, msg), timeout)
	if err == nil && kind != KindBackend {
		err = core.Errorf(core.ErrConnection, "control plane: %s:%d answered %s to BACKEND", host, port, kind)
	}
	return body, err
}

// Notify sends msg to the engine at host:port, as engine from.
func (c *Client) Notify(host string, port int, from string, msg []byte, timeout time.Duration) error {
	if len(msg) > maxPayload {
		return core.Errorf(core.ErrInvalidArgs, "notification of %d bytes, at most %d", len(msg), maxPayload)
	}
	_, _, err := c.Call(host, port, KindNotify, encodeNotify(from, msg), timeout)
	return err
}
