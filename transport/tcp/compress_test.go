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

const compressRegion = 3<<20 + 12345

// compressPair is an initiator and a target with the given compression
// settings, a source region of bf16 K/V and a target region.
func compressPair(t *testing.T, iniMode, tgtMode string, elem int) (ini, tgt *node, src, dst *guarded) {
	t.Helper()
	tgt = newNode(t, "target", nil, func(c *Config) { c.Compression = tgtMode })
	ini = newNode(t, "ini", nil, func(c *Config) { c.Compression, c.CompressElemSize = iniMode, elem })
	require.NoError(t, ini.b.AddPeer(tgt.desc()))
	src = newGuarded(t, ini.reg, compressRegion)
	require.NoError(t, kvdata.Fill(kvdata.BF16, src.mem(), 3))
	dst = newGuarded(t, tgt.reg, compressRegion)
	dst.fill(9)
	return ini, tgt, src, dst
}

// kvRanges covers the region with ranges of odd sizes, some straddling
// frame (1 MiB) and block (128 KiB) boundaries, some tiny.
func kvRanges() []core.Range {
	var rs []core.Range
	sizes := []uint64{1, 4093, 128<<10 + 1, 1<<20 + 7, 64 << 10, 3, 1<<20 - 5}
	off := uint64(0)
	for i := 0; off < compressRegion; i++ {
		n := min(sizes[i%len(sizes)], compressRegion-off)
		rs = append(rs, core.Range{LocalOffset: off, RemoteOffset: off, Size: n})
		off += n
	}
	return rs
}

func TestCompressedWritesLandIntact(t *testing.T) {
	for _, mode := range []string{"s2", "zstd", "auto"} {
		for _, elem := range []int{0, 2} {
			t.Run(fmt.Sprintf("%s/elem%d", mode, elem), func(t *testing.T) {
				ini, tgt, src, dst := compressPair(t, mode, mode, elem)
				for i := range 3 {
					st := ini.transfer(t, core.OpWrite, uint64(i+1), src.r, "target", dst.r, kvRanges())
					require.Equal(t, core.StatusSuccess, st.Code(), st.Message())
					require.True(t, bytes.Equal(src.mem(), dst.mem()), "the target holds the source byte for byte")
				}
				dst.checkGuards(t)
				out, in := ini.b.CompressionStats(), tgt.b.CompressionStats()
				require.Equal(t, mode, out.Mode)
				require.Equal(t, elem, out.ElemSize)
				require.Equal(t, out.FramesOut, in.FramesIn, "every compressed frame sent was decoded")
				require.Equal(t, out.RawOut, in.RawIn)
				if mode == "auto" {
					require.Contains(t, out.Peers, "target")
					return
				}
				require.Positive(t, out.FramesOut)
				if mode == "zstd" && elem == 2 {
					require.Less(t, out.Ratio, 0.8, "shuffled bf16 shrinks with zstd")
				}
			})
		}
	}
}

func TestPeerThatNegotiatesOffGetsPlainWrites(t *testing.T) {
	ini, tgt, src, dst := compressPair(t, "zstd", "off", 2)
	st := ini.transfer(t, core.OpWrite, 1, src.r, "target", dst.r, kvRanges())
	require.Equal(t, core.StatusSuccess, st.Code(), st.Message())
	require.Equal(t, src.mem(), dst.mem())
	require.Zero(t, ini.b.CompressionStats().FramesOut, "a target that does not offer compression gets none")
	require.Equal(t, "off", tgt.b.CompressionStats().Mode)
}

func TestInitiatorWithCompressionOffIgnoresTheOffer(t *testing.T) {
	ini, tgt, src, dst := compressPair(t, "off", "zstd", 0)
	st := ini.transfer(t, core.OpWrite, 1, src.r, "target", dst.r, kvRanges())
	require.Equal(t, core.StatusSuccess, st.Code(), st.Message())
	require.Equal(t, src.mem(), dst.mem())
	require.Zero(t, tgt.b.CompressionStats().FramesIn)
}

func TestReadsAreNeverCompressed(t *testing.T) {
	ini, tgt, src, dst := compressPair(t, "zstd", "zstd", 2)
	st := ini.transfer(t, core.OpRead, 1, src.r, "target", dst.r, []core.Range{{Size: 1 << 20}})
	require.Equal(t, core.StatusSuccess, st.Code(), st.Message())
	require.Equal(t, dst.mem()[:1<<20], src.mem()[:1<<20])
	require.Zero(t, ini.b.CompressionStats().FramesOut)
	require.Zero(t, tgt.b.CompressionStats().FramesOut)
}

func TestBadCompressionSettingIsRefused(t *testing.T) {
	_, err := New(Config{Compression: "lz4"}, core.BackendEnv{LocalKey: "x", Host: "127.0.0.1", Registry: core.NewRegistry(), Inbound: core.NewInboundTable(8), Logger: testLogger()})
	require.ErrorContains(t, err, `compression "lz4": want off, s2, zstd or auto`)
	_, err = New(Config{Compression: "s2", CompressElemSize: 17}, core.BackendEnv{LocalKey: "x", Host: "127.0.0.1", Registry: core.NewRegistry(), Inbound: core.NewInboundTable(8), Logger: testLogger()})
	require.ErrorContains(t, err, "compress_elem_size 17")
}

// compressedRequest is a write request whose payload is frame.
func compressedRequest(mem memRef, uid uint64, entries []core.Range, frame []byte) []byte {
	h := reqHeader{Type: reqWrite, Flags: flagCompressed, MemID: mem.id, Token: mem.tok, UID: uid, Instance: uid, Parts: 1,
		Entries: uint32(len(entries)), Payload: uint64(len(frame))}
	b := make([]byte, reqHeaderLen+entryLen*len(entries))
	h.put(b)
	for i, e := range entries {
		putEntry(b[reqHeaderLen+i*entryLen:], e.RemoteOffset, e.Size)
	}
	return append(b, frame...)
}

func encodeFrame(t *testing.T, data []byte) []byte {
	c, err := compress.New(compress.Options{})
	require.NoError(t, err)
	defer c.Close()
	f, err := c.Encode(compress.Zstd, 0, [][]byte{data})
	require.NoError(t, err)
	defer f.Release()
	return f.AppendTo(nil)
}

func TestHostileCompressedWrites(t *testing.T) {
	n, g := target(t, nil, func(c *Config) { c.Compression = "zstd" })
	before := g.snapshot()
	p := handshake(t, n, "mallory")
	zeros := make([]byte, 8192)

	// A frame that decompresses past its range: refused, nothing written.
	p.write(compressedRequest(ref(g.r), 1, []core.Range{{RemoteOffset: 100, Size: 1000}}, encodeFrame(t, zeros)))
	h, msg, _ := p.response()
	require.Equal(t, core.ErrInvalidArgs, h.Code)
	require.Contains(t, msg, "frame holds 8192 raw bytes, its ranges 1000")
	// Garbage where the frame should be.
	p.write(compressedRequest(ref(g.r), 2, []core.Range{{RemoteOffset: 0, Size: 4000}}, bytes.Repeat([]byte{0x5a}, 300)))
	h, msg, _ = p.response()
	require.Equal(t, core.ErrInvalidArgs, h.Code)
	require.Contains(t, msg, "compressed frame refused")
	// Ranges out of the region are refused by the registry before decoding.
	p.write(compressedRequest(ref(g.r), 3, []core.Range{{RemoteOffset: regionSize - 10, Size: 8192}}, encodeFrame(t, zeros)))
	h, msg, _ = p.response()
	require.Equal(t, core.ErrInvalidArgs, h.Code)
	require.Contains(t, msg, "exceeds")
	require.Equal(t, before, g.mem(), "nothing was written")
	g.checkGuards(t)
	// A compressed frame of more than the limit breaks the protocol.
	p.write(compressedRequest(ref(g.r), 4, []core.Range{{RemoteOffset: 0, Size: maxCompressedRaw + 1}}, nil))
	p.requireClosed()
	checkLegit(t, n, g)
}

func TestCompressedWriteToATargetThatDidNotOfferIt(t *testing.T) {
	n, g := target(t, nil, nil)
	p := handshake(t, n, "mallory")
	p.write(compressedRequest(ref(g.r), 1, []core.Range{{RemoteOffset: 0, Size: 8192}}, encodeFrame(t, make([]byte, 8192))))
	p.requireClosed()
	g.checkGuards(t)
	checkLegit(t, n, g)
}
