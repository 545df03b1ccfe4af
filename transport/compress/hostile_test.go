package compress

import (
	"bytes"
	"encoding/binary"
	"math/rand/v2"
	"testing"

	"github.com/klauspost/compress/s2"
	"github.com/klauspost/compress/zstd"
	"github.com/stretchr/testify/require"
)

// rawFrame builds a frame by hand: blocks of (raw size, data).
func rawFrame(codec Codec, elem uint8, total uint64, sizes []int, blocks [][]byte) []byte {
	var data []byte
	table := make([]byte, len(blocks)*blockEntry)
	for i, b := range blocks {
		putBlockEntry(table[i*blockEntry:], sizes[i], len(b))
		data = append(data, b...)
	}
	h := header{Codec: codec, Elem: elem, Blocks: uint32(len(blocks)), Raw: total, Wire: uint64(len(data))}
	out := make([]byte, headerLen)
	h.put(out)
	return append(append(out, table...), data...)
}

func zstdStream(t testing.TB, b []byte) []byte {
	var buf bytes.Buffer
	w, err := zstd.NewWriter(&buf)
	require.NoError(t, err)
	_, err = w.Write(b)
	require.NoError(t, err)
	require.NoError(t, w.Close())
	return buf.Bytes()
}

func zstdAll(t testing.TB, b []byte) []byte {
	e, err := zstd.NewWriter(nil)
	require.NoError(t, err)
	defer e.Close()
	return e.EncodeAll(b, nil)
}

func TestHostileFrames(t *testing.T) {
	c := newTest(t, 2)
	zeros := make([]byte, 1<<20)
	good := encodeBytes(t, c, S2, 0, [][]byte{bytes.Repeat([]byte("kv"), 3*testBlock/2+3)})
	patch := func(off int, v []byte) []byte {
		b := bytes.Clone(good)
		copy(b[off:], v)
		return b
	}
	u32 := func(v uint32) []byte { return binary.LittleEndian.AppendUint32(nil, v) }
	u64 := func(v uint64) []byte { return binary.LittleEndian.AppendUint64(nil, v) }
	planes := func(sizes ...uint32) []byte {
		var b []byte
		for _, s := range sizes {
			b = binary.LittleEndian.AppendUint32(b, s)
			b = append(b, make([]byte, s)...)
		}
		return b
	}
	cases := []struct {
		name  string
		frame []byte
		size  int
		want  string
	}{
		{"short", good[:10], 3*testBlock + 6, "shorter than the 32-byte header"},
		{"magic", patch(0, []byte{1, 2}), 3*testBlock + 6, "bad magic"},
		{"version", patch(2, []byte{9}), 3*testBlock + 6, "version 9"},
		{"codec off", patch(3, []byte{0}), 3*testBlock + 6, "unknown codec 0"},
		{"codec 7", patch(3, []byte{7}), 3*testBlock + 6, "unknown codec 7"},
		{"elem", patch(4, []byte{17}), 3*testBlock + 6, "shuffle element of 17 bytes"},
		{"destination short", good, 3*testBlock + 5, "its ranges"},
		{"destination long", good, 3*testBlock + 7, "its ranges"},
		{"blocks past frame", patch(8, u32(1<<31)), 3*testBlock + 6, "do not fit"},
		{"trailing byte", append(bytes.Clone(good), 0), 3*testBlock + 6, "block bytes"},
		{"wire total", patch(24, u64(1)), 3*testBlock + 6, "block bytes"},
		{"block too big", rawFrame(S2, 0, MaxBlockSize+1, []int{MaxBlockSize + 1}, [][]byte{{1}}), MaxBlockSize + 1, "want 1..4194304"},
		{"empty block", rawFrame(S2, 0, 0, []int{0}, [][]byte{{}}), 0, "want 1..4194304"},
		{"wire over raw", rawFrame(S2, 0, 2, []int{2}, [][]byte{{1, 2, 3}}), 2, "3 wire bytes for 2 raw"},
		{"blocks past raw", rawFrame(S2, 0, 4, []int{3, 3}, [][]byte{{1, 2, 3}, {1, 2, 3}}), 4, "ends past the frame"},
		{"blocks short of raw", rawFrame(S2, 0, 6, []int{3}, [][]byte{{1, 2, 3}}), 6, "blocks hold 3 raw"},
		{"s2 bomb", rawFrame(S2, 0, 1000, []int{1000}, [][]byte{s2.Encode(nil, zeros)}), 1000, "s2 block of 1048576 bytes, want 1000"},
		{"s2 garbage", rawFrame(S2, 0, 1000, []int{1000}, [][]byte{{0xe8, 0x07, 0xff, 0xff, 0xff}}), 1000, "corrupt"},
		{"zstd bomb", rawFrame(Zstd, 0, 1000, []int{1000}, [][]byte{zstdAll(t, zeros)}), 1000, "block 0"},
		{"zstd stream bomb", rawFrame(Zstd, 0, 1000, []int{1000}, [][]byte{zstdStream(t, zeros)}), 1000, "block 0"},
		{"zstd short", rawFrame(Zstd, 0, 4000, []int{4000}, [][]byte{zstdAll(t, zeros[:3000])}), 4000, "block 0"},
		{"zstd garbage", rawFrame(Zstd, 0, 1000, []int{1000}, [][]byte{bytes.Repeat([]byte{0x28}, 40)}), 1000, "block 0"},
		{"plane past block", rawFrame(S2, 2, 1000, []int{1000}, [][]byte{append(u32(900), 1, 2, 3)}), 1000, "plane 0: 900 bytes, 3 left"},
		{"plane past its size", rawFrame(S2, 2, 20, []int{20}, [][]byte{planes(11)}), 20, "plane 0: 11 bytes for 10"},
		{"huff0 plane in an s2 frame", rawFrame(S2, 2, 20, []int{20}, [][]byte{append(u32(planeHuff|2), 1, 2)}), 20, "huff0 plane of 10 bytes in a s2 frame"},
		{"plane size cut", rawFrame(S2, 2, 1000, []int{1000}, [][]byte{{1, 2}}), 1000, "no room for its size"},
		{"after planes", rawFrame(S2, 2, 1000, []int{1000}, [][]byte{append(planes(1, 1), 9)}), 1000, "plane 0"},
	}
	r := rand.New(rand.NewPCG(5, 6))
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			g := newGuarded(tc.size, r, 1+r.IntN(3))
			err := c.Decode(tc.frame, g.parts)
			require.ErrorIs(t, err, ErrCorrupt)
			require.ErrorContains(t, err, tc.want)
			g.requireGuards(t)
		})
	}
}

// A frame whose blocks are damaged either fails or fills the destination
// with wrong bytes, never more.
func TestDamagedBlocks(t *testing.T) {
	c := newTest(t, 2)
	src := payload(t, "bf16", 5*testBlock+3, 11)
	r := rand.New(rand.NewPCG(7, 8))
	for _, codec := range []Codec{S2, Zstd} {
		frame := encodeBytes(t, c, codec, 2, [][]byte{src})
		for range 200 {
			bad := bytes.Clone(frame)
			for range 1 + r.IntN(4) {
				i := headerLen + r.IntN(len(bad)-headerLen)
				bad[i] ^= byte(1 + r.IntN(255))
			}
			g := newGuarded(len(src), r, 1+r.IntN(4))
			if err := c.Decode(bad, g.parts); err != nil {
				require.ErrorIs(t, err, ErrCorrupt)
			}
			g.requireGuards(t)
		}
	}
}
