package tcp

// The GPU paths of the TCP backend against a fake driver whose "device
// memory" is host memory and whose staging ring can fail on command: the
// error paths that a real driver (or the stand-in, see core/engine) does not
// produce on demand.

import (
	"bytes"
	"errors"
	"sync/atomic"
	"testing"
	"time"
	"unsafe"

	"github.com/stretchr/testify/require"

	"github.com/mori-go/mori-go/core"
	"github.com/mori-go/mori-go/internal/hostmem"
)

// fakeGPU stages in chunks of chunk bytes. failRead and failWrite, when
// set to k, make the k-th chunk copy of the next ReadStaged or WriteStaged
// fail (once).
type fakeGPU struct {
	chunk               int
	failRead, failWrite atomic.Int32
	reads, writes       atomic.Int32
}

var errInjected = errors.New("injected device fault")

func mem(addr uintptr, n uint64) []byte {
	return unsafe.Slice((*byte)(core.PointerOf(addr)), n)
}

func (g *fakeGPU) CheckDeviceRange(uintptr, uint64, int) error { return nil }

func (g *fakeGPU) CopyToHost(dst []byte, src uintptr, _ int) error {
	copy(dst, mem(src, uint64(len(dst))))
	return nil
}

func (g *fakeGPU) CopyFromHost(dst uintptr, src []byte, _ int) error {
	copy(mem(dst, uint64(len(src))), src)
	return nil
}

func (g *fakeGPU) ReadStaged(_ int, spans []core.DeviceSpan, consume func([]byte) error) error {
	g.reads.Add(1)
	fail := g.failRead.Swap(0)
	buf := make([]byte, 0, g.chunk)
	k := int32(0)
	flush := func() error {
		if k++; k == fail {
			return errInjected
		}
		err := consume(buf)
		buf = buf[:0]
		return err
	}
	for _, sp := range spans {
		data := mem(sp.Addr, sp.Size)
		for len(data) > 0 {
			n := min(g.chunk-len(buf), len(data))
			buf = append(buf, data[:n]...)
			data = data[n:]
			if len(buf) == g.chunk {
				if err := flush(); err != nil {
					return err
				}
			}
		}
	}
	if len(buf) > 0 {
		return flush()
	}
	return nil
}

func (g *fakeGPU) WriteStaged(_ int, spans []core.DeviceSpan, produce func([]byte) error) error {
	g.writes.Add(1)
	fail := g.failWrite.Swap(0)
	var total uint64
	for _, sp := range spans {
		total += sp.Size
	}
	buf := make([]byte, g.chunk)
	si, off := 0, uint64(0)
	for k := int32(1); total > 0; k++ {
		c := buf[:min(uint64(g.chunk), total)]
		if err := produce(c); err != nil {
			return err
		}
		if k == fail {
			return errInjected
		}
		total -= uint64(len(c))
		for len(c) > 0 {
			for off == spans[si].Size {
				si, off = si+1, 0
			}
			n := copy(mem(spans[si].Addr+uintptr(off), spans[si].Size-off), c)
			c, off = c[n:], off+uint64(n)
		}
	}
	return nil
}

var _ core.GPU = (*fakeGPU)(nil)

// gpuNode is a node whose backend has the fake GPU driver.
func gpuNode(t *testing.T, key string, g *fakeGPU) *node {
	t.Helper()
	n := &node{key: key, reg: core.NewRegistry(), inbound: core.NewInboundTable(1024)}
	b, err := New(Config{DialTimeout: ioDeadline, HandshakeTimeout: ioDeadline, StallTimeout: ioDeadline, Streams: 1, ChunkSize: 64 << 10},
		core.BackendEnv{LocalKey: key, Host: "127.0.0.1", Registry: n.reg, Inbound: n.inbound, GPU: g, Logger: testLogger()})
	require.NoError(t, err)
	t.Cleanup(func() { b.Close() })
	n.b = b
	return n
}

// gpuRegion registers n bytes of host memory as GPU memory the CPU cannot
// address (Host false): the backend must go through the driver.
func gpuRegion(t *testing.T, reg *core.Registry, n int) (*core.Region, []byte) {
	t.Helper()
	buf, err := hostmem.Alloc(n)
	require.NoError(t, err)
	t.Cleanup(func() { buf.Free() })
	r, err := reg.Add(buf.Addr(), uint64(n), core.LocationGPU, 0, false)
	require.NoError(t, err)
	return r, buf.Bytes()
}

func fill(b []byte, seed byte) {
	for i := range b {
		b[i] = seed + byte(i*13)
	}
}

func gpuTransfer(t *testing.T, n *node, op core.Op, uid uint64, local *core.Region, target string, remote *core.Region, ranges []core.Range) *core.Status {
	t.Helper()
	st := core.NewStatus()
	tr := &core.Transfer{
		Op: op, UID: uid, Instance: uid, Peer: target, Local: local, Status: st, Ranges: ranges,
		Remote: core.MemoryDesc{EngineKey: target, ID: remote.ID, Token: remote.Token(), Location: remote.Location, Size: remote.Size},
	}
	n.b.Submit(tr)
	return st
}

func TestGPUStagedTransfers(t *testing.T) {
	g := &fakeGPU{chunk: 1000}
	a, b := gpuNode(t, "a", g), gpuNode(t, "b", g)
	require.NoError(t, a.b.AddPeer(b.desc()))
	const n = 300 << 10
	src, srcMem := gpuRegion(t, a.reg, n)
	dst, dstMem := gpuRegion(t, b.reg, n)
	host := newGuarded(t, a.reg, n)
	hdst := newGuarded(t, b.reg, n)
	fill(srcMem, 1)
	host.fill(7)
	ranges := []core.Range{{Size: 1}, {LocalOffset: 10, RemoteOffset: 5000, Size: 3000}, {LocalOffset: 100 << 10, RemoteOffset: 150 << 10, Size: 130 << 10}}
	// GPU and host frames in one batch of the single stream.
	sts := []*core.Status{
		gpuTransfer(t, a, core.OpWrite, 1, src, "b", dst, append([]core.Range(nil), ranges...)),
		gpuTransfer(t, a, core.OpWrite, 2, host.r, "b", hdst.r, append([]core.Range(nil), ranges...)),
		gpuTransfer(t, a, core.OpWrite, 3, src, "b", hdst.r, []core.Range{{LocalOffset: 200 << 10, RemoteOffset: 10 << 10, Size: 90 << 10}}),
	}
	for _, st := range sts {
		require.Equal(t, core.StatusSuccess, st.Wait(ioDeadline), st.Message())
	}
	same := func(a, b []byte, r core.Range) bool {
		return bytes.Equal(a[r.LocalOffset:r.LocalOffset+r.Size], b[r.RemoteOffset:r.RemoteOffset+r.Size])
	}
	for i, r := range ranges {
		require.True(t, same(srcMem, dstMem, r), "GPU range %d", i)
		require.True(t, same(host.mem(), hdst.mem(), r), "host range %d", i)
	}
	require.True(t, bytes.Equal(srcMem[200<<10:290<<10], hdst.mem()[10<<10:100<<10]), "GPU to host")
	hdst.checkGuards(t)

	// Read back into GPU memory.
	back, backMem := gpuRegion(t, a.reg, n)
	st := gpuTransfer(t, a, core.OpRead, 4, back, "b", dst, append([]core.Range(nil), ranges...))
	require.Equal(t, core.StatusSuccess, st.Wait(ioDeadline), st.Message())
	for i, r := range ranges {
		require.True(t, same(backMem, dstMem, r), "read range %d", i)
	}
	require.Positive(t, g.reads.Load())
	require.Positive(t, g.writes.Load())
}

func TestGPUStagingFailures(t *testing.T) {
	g := &fakeGPU{chunk: 4096}
	a, b := gpuNode(t, "a", g), gpuNode(t, "b", g)
	require.NoError(t, a.b.AddPeer(b.desc()))
	const n = 256 << 10
	src, srcMem := gpuRegion(t, a.reg, n)
	dst, dstMem := gpuRegion(t, b.reg, n)
	back, _ := gpuRegion(t, a.reg, n) // reads land here: frames of a failed read may still be arriving
	fill(srcMem, 3)
	all := []core.Range{{Size: n}}
	ok := func(t *testing.T, uid uint64) {
		t.Helper()
		clear(dstMem)
		st := gpuTransfer(t, a, core.OpWrite, uid, src, "b", dst, []core.Range{{Size: n}})
		require.Equal(t, core.StatusSuccess, st.Wait(ioDeadline), st.Message())
		require.True(t, bytes.Equal(srcMem, dstMem))
	}
	ok(t, 1)

	t.Run("target copy to the device fails", func(t *testing.T) {
		g.failWrite.Store(3)
		st := gpuTransfer(t, a, core.OpWrite, 10, src, "b", dst, all)
		require.Equal(t, core.ErrGPUOp, st.Wait(ioDeadline), st.Message())
		require.Contains(t, st.Message(), "copy to GPU 0 memory")
		require.Contains(t, st.Message(), "injected device fault")
		in, found := b.inbound.Pop(core.InboundKey{Peer: "a", UID: 10})
		require.True(t, found)
		require.Equal(t, core.ErrGPUOp, in.Code)
		ok(t, 11) // the stream stayed in step
	})
	t.Run("target copy from the device fails before the response", func(t *testing.T) {
		g.failRead.Store(1)
		st := gpuTransfer(t, a, core.OpRead, 20, back, "b", dst, all)
		require.Equal(t, core.ErrGPUOp, st.Wait(ioDeadline), st.Message())
		require.Contains(t, st.Message(), "copy from GPU 0 memory")
		ok(t, 21)
	})
	t.Run("initiator copy to the device fails", func(t *testing.T) {
		g.failWrite.Store(2)
		st := gpuTransfer(t, a, core.OpRead, 30, back, "b", dst, all)
		require.Equal(t, core.ErrGPUOp, st.Wait(ioDeadline), st.Message())
		require.Contains(t, st.Message(), "injected device fault")
		ok(t, 31) // the rest of the payload was drained
	})
	t.Run("initiator copy from the device fails", func(t *testing.T) {
		g.failRead.Store(2)
		st := gpuTransfer(t, a, core.OpWrite, 40, src, "b", dst, all)
		require.Equal(t, core.ErrGPUOp, st.Wait(ioDeadline), st.Message())
		require.Contains(t, st.Message(), "copy GPU 0 memory to the network")
		// The frame was half written: the stream broke. Redialed in the
		// background; a later transfer goes through.
		var last *core.Status
		for uid := uint64(41); uid < 100; uid++ {
			clear(dstMem)
			last = gpuTransfer(t, a, core.OpWrite, uid, src, "b", dst, []core.Range{{Size: n}})
			if last.Wait(ioDeadline) == core.StatusSuccess {
				break
			}
			time.Sleep(10 * time.Millisecond) // the redial runs in the background
		}
		require.Equal(t, core.StatusSuccess, last.Code(), last.Message())
		require.True(t, bytes.Equal(srcMem, dstMem))
	})
}

// TestGPUWithoutDriver: GPU memory the CPU cannot address, and no driver.
func TestGPUWithoutDriver(t *testing.T) {
	a := newNode(t, "a", nil, nil)
	b := newNode(t, "b", nil, nil)
	require.NoError(t, a.b.AddPeer(b.desc()))
	src, _ := gpuRegion(t, a.reg, 4096)
	dst := newGuarded(t, b.reg, 4096)
	st := gpuTransfer(t, a, core.OpWrite, 1, src, "b", dst.r, []core.Range{{Size: 16}})
	require.Equal(t, core.ErrGPUOp, st.Wait(ioDeadline))
	require.Contains(t, st.Message(), "no GPU driver")
}
