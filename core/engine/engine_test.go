package engine_test

import (
	"crypto/rand"
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/mori-go/mori-go/core"
	"github.com/mori-go/mori-go/core/engine"
	"github.com/mori-go/mori-go/internal/hostmem"
	"github.com/mori-go/mori-go/stack"
)

func newEngine(t *testing.T, key string, mod func(*stack.Config)) *engine.Engine {
	t.Helper()
	cfg := stack.Config{Config: engine.Config{Key: key, TransferTimeout: 20 * time.Second}}
	if mod != nil {
		mod(&cfg)
	}
	e, err := stack.New(cfg)
	require.NoError(t, err)
	t.Cleanup(func() { require.NoError(t, e.Close()) })
	_, err = e.CreateBackend(core.BackendTCP, nil)
	require.NoError(t, err)
	return e
}

func alloc(t *testing.T, n int) *hostmem.Buffer {
	t.Helper()
	m, err := hostmem.Alloc(n)
	require.NoError(t, err)
	t.Cleanup(func() { m.Free() })
	return m
}

// pair returns two engines registered with each other.
func pair(t *testing.T, mod func(*stack.Config)) (*engine.Engine, *engine.Engine) {
	a := newEngine(t, "prefill-"+t.Name(), mod)
	b := newEngine(t, "decode-"+t.Name(), mod)
	require.NoError(t, a.RegisterRemoteEngine(b.Desc()))
	require.NoError(t, b.RegisterRemoteEngine(a.Desc()))
	return a, b
}

func register(t *testing.T, e *engine.Engine, m *hostmem.Buffer) core.MemoryDesc {
	t.Helper()
	d, err := e.RegisterMemory(m.Addr(), uint64(m.Len()), -1, core.LocationCPU)
	require.NoError(t, err)
	return d
}

func TestWriteAndReadMoveBytesIntact(t *testing.T) {
	a, b := pair(t, nil)
	const n = 8 << 20
	src, dst := alloc(t, n), alloc(t, n)
	rand.Read(src.Bytes())
	sd, dd := register(t, a, src), register(t, b, dst)

	// Mixed ranges: tiny, page-sized, one larger than a chunk, unaligned.
	ranges := []core.Range{
		{LocalOffset: 0, RemoteOffset: 100, Size: 1},
		{LocalOffset: 4096, RemoteOffset: 8192, Size: 4096},
		{LocalOffset: 1 << 20, RemoteOffset: 2 << 20, Size: 3<<20 + 7},
		{LocalOffset: 7 << 20, RemoteOffset: 7 << 20, Size: 1000},
	}
	uid := a.AllocateTransferUID()
	st := a.Submit(core.OpWrite, []engine.Request{{Local: sd, Remote: dd, Ranges: ranges, UID: uid}})
	require.Equal(t, core.StatusSuccess, core.WaitAll(st, 10*time.Second), st[0].Message())
	for _, r := range ranges {
		require.Equal(t, src.Bytes()[r.LocalOffset:r.LocalOffset+r.Size], dst.Bytes()[r.RemoteOffset:r.RemoteOffset+r.Size])
	}
	in, ok := b.PopInboundTransferStatus(a.Key(), uid)
	require.True(t, ok)
	require.Equal(t, core.StatusSuccess, in.Code)
	_, ok = b.PopInboundTransferStatus(a.Key(), uid)
	require.False(t, ok, "a popped entry is freed")

	// Read back into a fresh buffer.
	back := alloc(t, n)
	bd := register(t, a, back)
	rr := make([]core.Range, len(ranges))
	for i, r := range ranges {
		rr[i] = core.Range{LocalOffset: r.LocalOffset, RemoteOffset: r.RemoteOffset, Size: r.Size}
	}
	st = a.Submit(core.OpRead, []engine.Request{{Local: bd, Remote: dd, Ranges: rr, UID: a.AllocateTransferUID()}})
	require.Equal(t, core.StatusSuccess, core.WaitAll(st, 10*time.Second), st[0].Message())
	for _, r := range ranges {
		require.Equal(t, src.Bytes()[r.LocalOffset:r.LocalOffset+r.Size], back.Bytes()[r.LocalOffset:r.LocalOffset+r.Size])
	}
	require.Zero(t, a.InFlight())
}

func TestManySmallRangesInOneBatch(t *testing.T) {
	a, b := pair(t, nil)
	const pages, page = 10000, 1024
	src, dst := alloc(t, pages*page), alloc(t, 2*pages*page)
	rand.Read(src.Bytes())
	sd, dd := register(t, a, src), register(t, b, dst)
	ranges := make([]core.Range, pages)
	for i := range ranges {
		// Scatter to every other page so nothing coalesces.
		ranges[i] = core.Range{LocalOffset: uint64(i * page), RemoteOffset: uint64(2 * i * page), Size: page}
	}
	st := a.Submit(core.OpWrite, []engine.Request{{Local: sd, Remote: dd, Ranges: ranges, UID: 1}})
	require.Equal(t, core.StatusSuccess, core.WaitAll(st, 10*time.Second), st[0].Message())
	for i := 0; i < pages; i++ {
		require.Equal(t, src.Bytes()[i*page:(i+1)*page], dst.Bytes()[2*i*page:(2*i+1)*page], "page %d", i)
	}
}

func TestBadRequestsFailWithClearErrors(t *testing.T) {
	a, b := pair(t, nil)
	src, dst := alloc(t, 1<<16), alloc(t, 1<<16)
	sd, dd := register(t, a, src), register(t, b, dst)
	forged := dd
	forged.ID = 999
	forgedSize := dd
	forgedSize.Size = 1 << 40 // the initiator believes the region is huge
	cases := []struct {
		name string
		rq   engine.Request
		code core.StatusCode
		msg  string
	}{
		{"zero length", engine.Request{Local: sd, Remote: dd, Ranges: []core.Range{{Size: 0}}}, core.ErrInvalidArgs, "zero-length"},
		{"local overflow", engine.Request{Local: sd, Remote: dd, Ranges: []core.Range{{LocalOffset: 1<<63 + 5, Size: 1 << 63}}}, core.ErrInvalidArgs, "exceeds"},
		{"remote overflow", engine.Request{Local: sd, Remote: dd, Ranges: []core.Range{{RemoteOffset: ^uint64(0) - 2, Size: 16}}}, core.ErrInvalidArgs, "exceeds remote memory"},
		{"remote past end", engine.Request{Local: sd, Remote: dd, Ranges: []core.Range{{RemoteOffset: 1<<16 - 8, Size: 16}}}, core.ErrInvalidArgs, "exceeds remote memory"},
		{"unknown remote memory", engine.Request{Local: sd, Remote: forged, Ranges: []core.Range{{Size: 16}}}, core.ErrNotFound, "memory 999 is not registered"},
		{"forged remote size", engine.Request{Local: sd, Remote: forgedSize, Ranges: []core.Range{{RemoteOffset: 1 << 20, Size: 16}}}, core.ErrInvalidArgs, "exceeds its 65536 bytes"},
		{"remote memory as local", engine.Request{Local: dd, Remote: dd, Ranges: []core.Range{{Size: 16}}}, core.ErrInvalidArgs, "belongs to engine"},
	}
	for i, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			c.rq.UID = uint64(100 + i)
			st := a.Submit(core.OpWrite, []engine.Request{c.rq})
			require.Equal(t, c.code, core.WaitAll(st, 5*time.Second))
			require.Contains(t, st[0].Message(), c.msg)
		})
	}
	// Nothing was written, and the engine still works.
	require.Equal(t, make([]byte, 1<<16), dst.Bytes())
	st := a.Submit(core.OpWrite, []engine.Request{{Local: sd, Remote: dd, Ranges: []core.Range{{Size: 64}}, UID: 7}})
	require.Equal(t, core.StatusSuccess, core.WaitAll(st, 5*time.Second), st[0].Message())
}

func TestDuplicateUIDInFlightIsRefused(t *testing.T) {
	a, b := pair(t, nil)
	src, dst := alloc(t, 64<<20), alloc(t, 64<<20)
	sd, dd := register(t, a, src), register(t, b, dst)
	big := []core.Range{{Size: 64 << 20}}
	st := a.Submit(core.OpWrite, []engine.Request{{Local: sd, Remote: dd, Ranges: big, UID: 42}, {Local: sd, Remote: dd, Ranges: big, UID: 42}})
	require.Equal(t, core.ErrInvalidArgs, st[1].Wait(5*time.Second))
	require.Contains(t, st[1].Message(), "already in flight")
	require.Equal(t, core.StatusSuccess, st[0].Wait(10*time.Second), st[0].Message())
}

func TestUnregisteredPeerAndNoBackend(t *testing.T) {
	e, err := stack.New(stack.Config{Config: engine.Config{Key: "lonely"}})
	require.NoError(t, err)
	defer e.Close()
	m := alloc(t, 4096)
	d, err := e.RegisterMemory(m.Addr(), 4096, -1, core.LocationCPU)
	require.NoError(t, err)
	st := e.Submit(core.OpWrite, []engine.Request{{Local: d, Remote: d, Ranges: []core.Range{{Size: 1}}}})
	require.Equal(t, core.ErrBadState, st[0].Code())
	require.Contains(t, st[0].Message(), "create backend first")

	_, err = e.CreateBackend(core.BackendTCP, nil)
	require.NoError(t, err)
	other := d
	other.EngineKey = "stranger"
	st = e.Submit(core.OpWrite, []engine.Request{{Local: d, Remote: other, Ranges: []core.Range{{Size: 1}}}})
	require.Equal(t, core.ErrNotFound, st[0].Code())
	require.Contains(t, st[0].Message(), `remote engine "stranger" is not registered`)
}

func TestRegisterMemoryChecks(t *testing.T) {
	e := newEngine(t, "reg", nil)
	m := alloc(t, 1<<16)
	_, err := e.RegisterMemory(m.Addr(), 4096, -1, core.LocationCPU)
	require.NoError(t, err)
	_, err = e.RegisterMemory(m.Addr()+2048, 4096, -1, core.LocationCPU)
	require.ErrorContains(t, err, "overlaps region 1")
	_, err = e.RegisterMemory(0, 4096, -1, core.LocationCPU)
	require.ErrorContains(t, err, "null pointer")
	_, err = e.RegisterMemory(m.Addr()+8192, 0, -1, core.LocationCPU)
	require.ErrorContains(t, err, "empty range")
	_, err = e.RegisterMemory(^uintptr(0)-10, 4096, -1, core.LocationCPU)
	require.ErrorContains(t, err, "wraps")
	require.Equal(t, core.ErrInvalidArgs, core.CodeOf(err))
}

func TestDeregisterWithTransfersInFlight(t *testing.T) {
	a, b := pair(t, nil)
	const n = 64 << 20
	src, dst := alloc(t, n), alloc(t, n)
	sd, dd := register(t, a, src), register(t, b, dst)
	var sts []*core.Status
	for i := 0; i < 8; i++ {
		sts = append(sts, a.Submit(core.OpWrite, []engine.Request{{Local: sd, Remote: dd, Ranges: []core.Range{{Size: n}}, UID: uint64(i + 1)}})...)
	}
	// Deregister the target memory while writes are under way, then poison
	// it: no write may land after deregistration returned.
	require.NoError(t, b.DeregisterMemory(dd))
	for i := range dst.Bytes() {
		dst.Bytes()[i] = 0xAB
	}
	for _, st := range sts {
		c := st.Wait(20 * time.Second)
		require.True(t, c.Terminal())
		if c.Failed() {
			require.Contains(t, st.Message(), "memory")
		}
	}
	for i, v := range dst.Bytes() {
		if v != 0xAB {
			t.Fatalf("byte %d written after deregistration", i)
		}
	}
	// And a new transfer to the old descriptor fails cleanly.
	st := a.Submit(core.OpWrite, []engine.Request{{Local: sd, Remote: dd, Ranges: []core.Range{{Size: 16}}, UID: 99}})
	require.Equal(t, core.ErrNotFound, st[0].Wait(5*time.Second))
	require.Contains(t, st[0].Message(), fmt.Sprintf("memory %d is not registered", dd.ID))
}

func TestTotalsCountWhatSucceeded(t *testing.T) {
	a, b := pair(t, nil)
	const n = 1 << 20
	src, dst := alloc(t, n), alloc(t, n)
	sd, dd := register(t, a, src), register(t, b, dst)
	ranges := []core.Range{{LocalOffset: 0, RemoteOffset: 0, Size: 4096}, {LocalOffset: 8192, RemoteOffset: 8192, Size: 100}}
	st := a.Submit(core.OpWrite, []engine.Request{{Local: sd, Remote: dd, Ranges: ranges, UID: 1}})
	require.Equal(t, core.StatusSuccess, core.WaitAll(st, 10*time.Second), st[0].Message())
	st = a.Submit(core.OpRead, []engine.Request{{Local: sd, Remote: dd, Ranges: []core.Range{{Size: 777}}, UID: 2}})
	require.Equal(t, core.StatusSuccess, core.WaitAll(st, 10*time.Second), st[0].Message())
	// a range past the remote memory fails at once and moves nothing
	st = a.Submit(core.OpWrite, []engine.Request{{Local: sd, Remote: dd, Ranges: []core.Range{{RemoteOffset: n, Size: 1}}, UID: 3}})
	require.Equal(t, core.ErrInvalidArgs, st[0].Code())
	got := a.Totals()
	require.Positive(t, got.TransferNanos, "the successful transfers took some time")
	nanos := got.TransferNanos
	got.TransferNanos = 0
	require.Equal(t, engine.Totals{BytesWritten: 4196, BytesRead: 777, Succeeded: 2}, got)
	require.Equal(t, engine.Totals{}, b.Totals(), "the target of one-sided transfers starts none")
	// a transfer that starts and then fails counts as failed, its bytes not
	require.NoError(t, b.Close())
	st = a.Submit(core.OpWrite, []engine.Request{{Local: sd, Remote: dd, Ranges: ranges, UID: 4}})
	require.NotEqual(t, core.StatusSuccess, core.WaitAll(st, 20*time.Second))
	got2 := a.Totals()
	require.Equal(t, nanos, got2.TransferNanos, "a failed transfer adds no time")
	got2.TransferNanos = 0
	require.Equal(t, engine.Totals{BytesWritten: 4196, BytesRead: 777, Succeeded: 2, Failed: 1}, got2)
}
