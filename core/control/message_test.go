package control

import (
	"bytes"
	"errors"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/mori-go/mori-go/core"
)

func TestSealOpen(t *testing.T) {
	for _, secret := range [][]byte{nil, []byte("k")} {
		kind, body, err := open(seal(KindNotify, []byte("b"), secret), secret)
		require.NoError(t, err)
		require.Equal(t, KindNotify, kind)
		require.Equal(t, []byte("b"), body)
	}
	_, _, err := open(seal(KindNotify, []byte("b"), []byte("k")), []byte("other"))
	require.ErrorContains(t, err, "authentication failed: wrong shared secret")
	_, _, err = open(seal(KindNotify, []byte("b"), nil), []byte("k"))
	require.ErrorContains(t, err, "authentication failed: message carries no MAC")
	_, _, err = open(seal(KindNotify, []byte("b"), []byte("k")), nil)
	require.ErrorContains(t, err, "authentication failed: message carries a MAC")
	// The MAC binds kind to body.
	parts := seal(KindNotify, []byte("b"), []byte("k"))
	parts[0] = []byte(KindPing)
	_, _, err = open(parts, []byte("k"))
	require.ErrorContains(t, err, "authentication failed")

	from, msg, err := decodeNotify(encodeNotify("engine", []byte("hi")))
	require.NoError(t, err)
	require.Equal(t, "engine", from)
	require.Equal(t, []byte("hi"), msg)
	for _, b := range [][]byte{nil, {1}, {0, 0}, {3, 0, 'a'}, {0x01, 0x02, 'a'}} {
		_, _, err := decodeNotify(b)
		require.ErrorIs(t, err, core.ErrMalformed, "%v", b)
	}
}

func FuzzOpen(f *testing.F) {
	f.Add([]byte(KindHello), []byte("body"), []byte{}, uint8(2), false)
	f.Add([]byte(KindHello), []byte("body"), mac([]byte("k"), KindHello, []byte("body")), uint8(3), true)
	f.Add([]byte("PING"), []byte{}, make([]byte, 32), uint8(3), true)
	f.Add(bytes.Repeat([]byte("K"), 17), []byte{}, []byte{}, uint8(2), false)
	f.Add([]byte{}, []byte{}, []byte{}, uint8(0), false)
	f.Fuzz(func(t *testing.T, kind, body, m []byte, n uint8, withSecret bool) {
		var secret []byte
		if withSecret {
			secret = []byte("k")
		}
		parts := [][]byte{kind, body, m, kind}[:min(int(n%5), 4)]
		k, b, err := open(parts, secret)
		if err != nil {
			require.True(t, errors.Is(err, core.ErrMalformed) || strings.HasPrefix(err.Error(), "authentication failed"), "%v", err)
			return
		}
		require.LessOrEqual(t, len(k), 16)
		require.Equal(t, string(parts[0]), k)
		require.Equal(t, parts[1], b)
		if withSecret {
			require.Len(t, parts, 3)
			require.Equal(t, mac(secret, k, b), parts[2], "accepted without the right MAC")
		} else {
			require.Len(t, parts, 2)
		}
	})
}

func FuzzDecodeNotify(f *testing.F) {
	f.Add(encodeNotify("engine", []byte("msg")))
	f.Add(encodeNotify(strings.Repeat("k", core.MaxKeyLen), nil))
	f.Add([]byte{0xff, 0xff})
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, b []byte) {
		from, msg, err := decodeNotify(b)
		if err != nil {
			require.ErrorIs(t, err, core.ErrMalformed)
			return
		}
		require.NotEmpty(t, from)
		require.LessOrEqual(t, len(from), core.MaxKeyLen)
		require.Equal(t, b, encodeNotify(from, msg))
	})
}
