package core

import (
	"crypto/rand"
	"crypto/subtle"
	"errors"
	"fmt"
	"log/slog"
)

// TokenLen is the size of a memory access token in bytes (128 bits).
const TokenLen = 16

// Token is the unforgeable capability of one memory registration: 128
// random bits, drawn from crypto/rand when the memory is registered and
// carried only inside the MemoryDesc handed to the application. A peer
// presents it with every access; the owning engine compares it, in
// constant time, with the registration's own (Registry.Resolve).
//
// A Token never prints: its String, GoString, text and JSON forms and its
// slog value are all "[redacted]", so that a descriptor logged or
// formatted by mistake does not leak it.
type Token [TokenLen]byte

const redacted = "[redacted]"

// NewToken draws a random token.
func NewToken() (Token, error) {
	var t Token
	if _, err := rand.Read(t[:]); err != nil {
		return t, Errorf(ErrInternal, "draw a memory access token: %w", err)
	}
	return t, nil
}

// Equal compares two tokens in constant time.
func (t Token) Equal(o Token) bool { return subtle.ConstantTimeCompare(t[:], o[:]) == 1 }

// String hides the token.
func (Token) String() string { return redacted }

// GoString hides the token from %#v.
func (Token) GoString() string { return redacted }

// Format hides the token from every fmt verb (%x included).
func (Token) Format(f fmt.State, _ rune) { f.Write([]byte(redacted)) }

// MarshalText hides the token from encoders (JSON among them).
func (Token) MarshalText() ([]byte, error) { return []byte(redacted), nil }

// LogValue hides the token from log/slog.
func (Token) LogValue() slog.Value { return slog.StringValue(redacted) }

// ErrAccessDenied is wrapped by the error of an access whose token does not
// match the registration it names. Its message names no token.
var ErrAccessDenied = errors.New("access denied")

// Resolve returns the region with the given id if tok is its token. A
// wrong or missing token is refused with an error wrapping ErrAccessDenied
// (and counted: Denied); an unknown id with ErrNotFound. Every data plane
// resolves the memory a peer names through it, before touching a byte.
func (g *Registry) Resolve(id uint32, tok Token) (*Region, error) {
	r, err := g.Get(id)
	if err != nil {
		return nil, err
	}
	if !r.token.Equal(tok) {
		g.denied.Add(1)
		return nil, Errorf(ErrNotFound, "memory %d: %w: the descriptor's token does not match the registration (a descriptor of another registration, or forged)", id, ErrAccessDenied)
	}
	return r, nil
}

// Denied returns the number of accesses refused for a wrong token.
func (g *Registry) Denied() uint64 { return g.denied.Load() }
