package control

import (
	"bytes"
	"encoding/binary"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/mori-go/mori-go/core"
)

func TestFrameRoundTrip(t *testing.T) {
	for _, parts := range [][][]byte{
		{[]byte(KindPing)},
		{[]byte(KindNotify), encodeNotify("a", []byte("msg"))},
		{[]byte(KindHello), bytes.Repeat([]byte{7}, MaxMessage), make([]byte, 32)},
		{{}, {}, {}},
	} {
		b := appendFrame(nil, parts)
		got, err := readFrame(bytes.NewReader(b))
		require.NoError(t, err)
		require.Equal(t, len(parts), len(got))
		for i := range parts {
			require.Equal(t, parts[i], got[i], "part %d", i)
		}
	}
}

func TestReadFrameRefusesSizesOutOfBounds(t *testing.T) {
	for _, n := range []uint32{0, maxFrame + 1, 1 << 31} {
		b := binary.LittleEndian.AppendUint32(nil, n)
		_, err := readFrame(bytes.NewReader(append(b, make([]byte, 16)...)))
		require.ErrorIs(t, err, core.ErrMalformed, "length %d", n)
		require.ErrorContains(t, err, "want 1..")
	}
	_, err := readFrame(bytes.NewReader([]byte{5, 0, 0, 0, 1}))
	require.Error(t, err, "a short frame")
}

func FuzzDecodeFrame(f *testing.F) {
	f.Add(appendFrame(nil, seal(KindHello, []byte("desc"), nil))[4:])
	f.Add(appendFrame(nil, seal(KindNotify, encodeNotify("k", []byte("m")), []byte("secret")))[4:])
	f.Add([]byte{1, 0xff, 0xff, 0xff, 0xff})
	f.Add([]byte{0})
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, b []byte) {
		parts, err := decodeFrame(b)
		if err != nil {
			require.ErrorIs(t, err, core.ErrMalformed)
			return
		}
		require.NotEmpty(t, parts)
		require.LessOrEqual(t, len(parts), maxParts)
		// A frame decodes only if it is exactly what appendFrame makes.
		require.Equal(t, b, appendFrame(nil, parts)[4:])
	})
}
