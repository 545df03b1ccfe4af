package control

import (
	"crypto/hmac"
	"crypto/sha256"
	"fmt"
	"log/slog"
	"net"
	"strconv"
	"sync"

	"github.com/mori-go/mori-go/core"
)

// maxKindLen bounds a message kind.
const maxKindLen = 16

// responder turns a request's parts into the reply's, for either
// transport. It serialises the handler's calls.
type responder struct {
	mu     sync.Mutex
	h      Handler
	secret []byte
	log    *slog.Logger
}

// respond decodes one request and returns the reply's parts.
func (r *responder) respond(parts [][]byte) [][]byte {
	kind, body, err := open(parts, r.secret)
	if err != nil {
		r.log.Warn("control plane: refused a request", "err", err)
		return r.fail(err)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	switch kind {
	case KindPing:
		return seal(KindPong, nil, r.secret)
	case KindHello:
		return r.hello(body)
	case KindNotify:
		from, msg, err := decodeNotify(body)
		if err == nil {
			err = r.h.Notify(from, msg)
		}
		if err != nil {
			return r.fail(err)
		}
		return seal(KindOK, nil, r.secret)
	case KindBackend:
		from, msg, err := decodeNotify(body)
		var out []byte
		if err == nil {
			out, err = r.h.Backend(from, msg)
		}
		if err != nil {
			return r.fail(err)
		}
		return seal(KindBackend, out, r.secret)
	}
	return r.fail(fmt.Errorf("unknown request kind %q", kind))
}

func (r *responder) hello(body []byte) [][]byte {
	var peer core.EngineDesc
	if err := peer.UnmarshalBinary(body); err != nil {
		return r.fail(fmt.Errorf("hello: %w", err))
	}
	me, err := r.h.Hello(peer)
	if err != nil {
		return r.fail(err)
	}
	b, err := me.MarshalBinary()
	if err != nil {
		return r.fail(err)
	}
	return seal(KindWelcome, b, r.secret)
}

// fail is the ERROR reply saying err.
func (r *responder) fail(err error) [][]byte {
	return seal(KindError, []byte(err.Error()), r.secret)
}

func mac(secret []byte, kind string, body []byte) []byte {
	m := hmac.New(sha256.New, secret)
	m.Write([]byte(kind))
	m.Write([]byte{0})
	m.Write(body)
	return m.Sum(nil)
}

// seal builds the parts of a message, with its MAC when there is a secret.
func seal(kind string, body []byte, secret []byte) [][]byte {
	parts := [][]byte{[]byte(kind), body}
	if len(secret) > 0 {
		parts = append(parts, mac(secret, kind, body))
	}
	return parts
}

// open checks the parts of a message and returns its kind and body.
func open(parts [][]byte, secret []byte) (string, []byte, error) {
	want := 2
	if len(secret) > 0 {
		want = 3
	}
	if len(parts) != want {
		if len(parts) == 2 && want == 3 {
			return "", nil, fmt.Errorf("authentication failed: message carries no MAC and this engine requires the shared secret")
		}
		if len(parts) == 3 && want == 2 {
			return "", nil, fmt.Errorf("authentication failed: message carries a MAC: the peer uses a shared secret and this engine has none")
		}
		return "", nil, fmt.Errorf("%w: %d frames, want %d", core.ErrMalformed, len(parts), want)
	}
	kind := string(parts[0])
	if len(kind) > maxKindLen {
		return "", nil, fmt.Errorf("%w: message kind of %d bytes", core.ErrMalformed, len(kind))
	}
	if want == 3 && !hmac.Equal(parts[2], mac(secret, kind, parts[1])) {
		return "", nil, fmt.Errorf("authentication failed: wrong shared secret")
	}
	return kind, parts[1], nil
}

func encodeNotify(from string, msg []byte) []byte {
	b := []byte{byte(len(from)), byte(len(from) >> 8)}
	b = append(b, from...)
	return append(b, msg...)
}

func decodeNotify(b []byte) (string, []byte, error) {
	if len(b) < 2 {
		return "", nil, fmt.Errorf("notify: %w: %d bytes", core.ErrMalformed, len(b))
	}
	n := int(b[0]) | int(b[1])<<8
	if n == 0 || n > core.MaxKeyLen || len(b)-2 < n {
		return "", nil, fmt.Errorf("notify: %w: sender key of %d bytes in %d", core.ErrMalformed, n, len(b))
	}
	return string(b[2 : 2+n]), b[2+n:], nil
}

// endpoint is host:port as errors name it.
func endpoint(host string, port int) string {
	return net.JoinHostPort(bindHost(host), strconv.Itoa(port))
}
