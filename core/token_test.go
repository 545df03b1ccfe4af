package core

import (
	"bytes"
	"encoding/json"
	"fmt"
	"log/slog"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestRegistryTokens(t *testing.T) {
	g := NewRegistry()
	a, err := g.Add(0x1000, 4096, LocationCPU, -1, true)
	require.NoError(t, err)
	b, err := g.Add(0x9000, 4096, LocationCPU, -1, true)
	require.NoError(t, err)
	require.False(t, a.Token().Equal(Token{}), "a token is drawn")
	require.False(t, a.Token().Equal(b.Token()), "each registration has its own token")

	r, err := g.Resolve(a.ID, a.Token())
	require.NoError(t, err)
	require.Same(t, a, r)

	for name, tok := range map[string]Token{"missing": {}, "region B's": b.Token(), "one bit off": flip(a.Token())} {
		_, err := g.Resolve(a.ID, tok)
		require.ErrorIs(t, err, ErrAccessDenied, name)
		require.Equal(t, ErrNotFound, CodeOf(err), name)
	}
	require.Equal(t, uint64(3), g.Denied())

	// Deregistered: the token names nothing; registering the same memory
	// again gives a new id and a new token.
	old := a.Token()
	_, err = g.Remove(a.ID)
	require.NoError(t, err)
	_, err = g.Resolve(a.ID, old)
	require.ErrorContains(t, err, "not registered")
	again, err := g.Add(0x1000, 4096, LocationCPU, -1, true)
	require.NoError(t, err)
	require.False(t, again.Token().Equal(old))
	_, err = g.Resolve(again.ID, old)
	require.ErrorIs(t, err, ErrAccessDenied)
}

func flip(t Token) Token {
	t[TokenLen-1] ^= 1
	return t
}

// A token never shows in what is printed, logged or encoded as JSON, and
// an access-denied error does not carry it either.
func TestTokenNeverPrinted(t *testing.T) {
	tok := Token{0xde, 0xad, 0xbe, 0xef, 0xde, 0xad, 0xbe, 0xef, 0xde, 0xad, 0xbe, 0xef, 0xde, 0xad, 0xbe, 0xef}
	m := MemoryDesc{EngineKey: "e", ID: 1, Token: tok, Location: LocationCPU, Size: 4096}
	var logged bytes.Buffer
	slog.New(slog.NewTextHandler(&logged, nil)).Info("desc", "token", tok, "desc", m, "ptr", &m)
	slog.New(slog.NewJSONHandler(&logged, nil)).Info("desc", "token", tok, "desc", m)
	j, err := json.Marshal(m)
	require.NoError(t, err)
	jp, err := json.Marshal(&m) // the descriptor's own JSON view
	require.NoError(t, err)
	j = append(j, jp...)
	outs := []string{
		fmt.Sprint(tok), fmt.Sprintf("%x %X %v %+v %#v %s %q %d", tok, tok, m, m, m, tok, tok, tok),
		m.String(), string(j), logged.String(),
	}
	g := NewRegistry()
	r, err := g.Add(0x1000, 16, LocationCPU, -1, true)
	require.NoError(t, err)
	_, err = g.Resolve(r.ID, tok)
	outs = append(outs, err.Error())
	rt := r.Token()
	for _, s := range outs {
		for _, secret := range [][]byte{tok[:], rt[:]} {
			for _, form := range []string{fmt.Sprintf("%x", []byte(secret)), fmt.Sprint([]byte(secret)), string(secret)} {
				require.NotContains(t, s, form)
			}
		}
		require.NotContains(t, s, "deadbeef")
		require.NotContains(t, s, "222 173")
	}
	require.NotContains(t, string(j), "Token")
}
