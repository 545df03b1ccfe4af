package tcp

import (
	"bytes"
	"fmt"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/mori-go/mori-go/core"
	"github.com/mori-go/mori-go/internal/kvdata"
	"github.com/mori-go/mori-go/transport/compress"
)

// bf16Source is a source region registered with opts and filled with the
// same bf16 K/V whatever opts say.
func bf16Source(t *testing.T, n *node, opts core.RegionOptions) *guarded {
	src := newGuardedWith(t, n.reg, compressRegion, opts)
	require.NoError(t, kvdata.Fill(kvdata.BF16, src.mem(), 3))
	return src
}

// sent is what the initiator compressed between two stats.
type sent struct{ frames, shuffled, raw, wire uint64 }

func (s sent) ratio() float64 { return float64(s.wire) / float64(s.raw) }

// writeAndCount writes all of src to dst with the element size elem (0:
// the registration's), checks the bytes landed intact, and returns what
// the initiator compressed for it.
func writeAndCount(t *testing.T, ini *node, uid uint64, src, dst *guarded, elem int) sent {
	t.Helper()
	before := ini.b.CompressionStats()
	dst.fill(byte(uid))
	st := ini.start(core.OpWrite, uid, src.r, "target", dst.r, kvRanges(), elem)
	require.True(t, st.Wait(ioDeadline).Terminal(), "transfer did not end")
	require.Equal(t, core.StatusSuccess, st.Code(), st.Message())
	require.True(t, bytes.Equal(src.mem(), dst.mem()), "the target holds the source byte for byte")
	dst.checkGuards(t)
	after := ini.b.CompressionStats()
	return sent{frames: after.FramesOut - before.FramesOut, shuffled: after.ShuffledOut - before.ShuffledOut,
		raw: after.RawOut - before.RawOut, wire: after.WireOut - before.WireOut}
}

func TestEachRegistrationShufflesByItsOwnElementSize(t *testing.T) {
	tgt := newNode(t, "target", nil, func(c *Config) { c.Compression = "zstd" })
	ini := newNode(t, "ini", nil, func(c *Config) { c.Compression = "zstd" }) // engine default: no shuffle
	require.NoError(t, ini.b.AddPeer(tgt.desc()))
	plain := bf16Source(t, ini, core.RegionOptions{})
	bf16 := bf16Source(t, ini, core.RegionOptions{ElemSize: 2})
	quad := bf16Source(t, ini, core.RegionOptions{ElemSize: 4})
	var dsts []*guarded
	for range 3 {
		dsts = append(dsts, newGuarded(t, tgt.reg, compressRegion))
	}

	// The region's length and most ranges (kvRanges) are no multiple of 2
	// or 4: the bytes past the last whole element travel as they are.
	asIs := writeAndCount(t, ini, 1, plain, dsts[0], 0)
	require.Positive(t, asIs.frames)
	require.Zero(t, asIs.shuffled, "a registration without an element size is not shuffled")
	byTwo := writeAndCount(t, ini, 2, bf16, dsts[1], 0)
	require.Positive(t, byTwo.frames)
	require.Equal(t, byTwo.frames, byTwo.shuffled, "every frame from the 2-byte registration is shuffled")
	require.Less(t, byTwo.ratio(), asIs.ratio()-0.05, "bf16 shuffled by 2-byte elements compresses better than as is")
	byFour := writeAndCount(t, ini, 3, quad, dsts[2], 0)
	require.Equal(t, byFour.frames, byFour.shuffled)

	// All three at once to the same peer, over the same streams: each
	// frame carries its element size and the target unshuffles by it.
	for _, d := range dsts {
		d.fill(0x77)
	}
	var sts []*core.Status
	for i, src := range []*guarded{plain, bf16, quad} {
		sts = append(sts, ini.start(core.OpWrite, uint64(10+i), src.r, "target", dsts[i].r, kvRanges(), 0))
	}
	for i, st := range sts {
		require.True(t, st.Wait(ioDeadline).Terminal(), "transfer %d did not end", i)
		require.Equal(t, core.StatusSuccess, st.Code(), st.Message())
		require.True(t, bytes.Equal(plain.mem(), dsts[i].mem()), "target region %d holds the source byte for byte", i)
		dsts[i].checkGuards(t)
	}
	in := tgt.b.CompressionStats()
	out := ini.b.CompressionStats()
	require.Equal(t, out.FramesOut, in.FramesIn, "every compressed frame sent was decoded")
	require.Equal(t, out.RawOut, in.RawIn)
}

func TestTransferElementSizeOverridesTheRegistration(t *testing.T) {
	tgt := newNode(t, "target", nil, func(c *Config) { c.Compression = "zstd" })
	ini := newNode(t, "ini", nil, func(c *Config) { c.Compression, c.CompressElemSize = "zstd", 2 })
	require.NoError(t, ini.b.AddPeer(tgt.desc()))
	byDefault := bf16Source(t, ini, core.RegionOptions{})
	none := bf16Source(t, ini, core.RegionOptions{ElemSize: 1})
	dst := newGuarded(t, tgt.reg, compressRegion)

	cases := []struct {
		name     string
		src      *guarded
		elem     int
		shuffled bool
	}{
		{"the engine's default (2) for a registration without one", byDefault, 0, true},
		{"a registration's 1 turns the shuffle off", none, 0, false},
		{"a transfer's 1 turns it off for a registration that has it", byDefault, 1, false},
		{"a transfer's 3 shuffles a registration that has none", none, 3, true},
		{"a transfer's 2", none, 2, true},
	}
	for i, c := range cases {
		t.Run(fmt.Sprint(i), func(t *testing.T) {
			s := writeAndCount(t, ini, uint64(i+1), c.src, dst, c.elem)
			require.Positive(t, s.frames, c.name)
			if c.shuffled {
				require.Equal(t, s.frames, s.shuffled, c.name)
			} else {
				require.Zero(t, s.shuffled, c.name)
			}
		})
	}
}

func TestCompressedFrameWithAHostileElementSizeIsRefused(t *testing.T) {
	n, g := target(t, nil, func(c *Config) { c.Compression = "zstd" })
	before := g.snapshot()
	p := handshake(t, n, "mallory")
	data := make([]byte, 40001) // odd: not a whole number of elements
	require.NoError(t, kvdata.Fill(kvdata.BF16, data, 5))
	c, err := compress.New(compress.Options{})
	require.NoError(t, err)
	defer c.Close()
	f, err := c.Encode(compress.Zstd, 2, [][]byte{data})
	require.NoError(t, err)
	frame := f.AppendTo(nil)
	f.Release()
	entries := []core.Range{{RemoteOffset: 100, Size: uint64(len(data))}}

	for i, elem := range []byte{17, 255} {
		bad := append([]byte(nil), frame...)
		bad[4] = elem // the header's shuffle element
		p.write(compressedRequest(ref(g.r), uint64(i+1), entries, bad))
		h, msg, _ := p.response()
		require.Equal(t, core.ErrInvalidArgs, h.Code)
		require.Contains(t, msg, fmt.Sprintf("shuffle element of %d bytes, at most %d", elem, compress.MaxElemSize))
	}
	require.Equal(t, before, g.mem(), "nothing was written")
	g.checkGuards(t)
	// The stream is still in step: the same frame, untouched, lands.
	p.write(compressedRequest(ref(g.r), 9, entries, frame))
	h, msg, _ := p.response()
	require.Equal(t, core.StatusSuccess, h.Code, msg)
	require.Equal(t, data, g.mem()[100:100+len(data)])
	g.checkGuards(t)
	checkLegit(t, n, g)
}
