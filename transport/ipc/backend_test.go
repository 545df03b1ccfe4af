package ipc_test

// The same-host path on its own, without an engine: two Backends whose
// control-plane calls go straight to each other, over the stand-in GPU
// driver (internal/standin), whose device memory is host memory that the
// test reads directly.

import (
	"crypto/rand"
	"testing"
	"time"
	"unsafe"

	"github.com/stretchr/testify/require"

	"github.com/mori-go/mori-go/core"
	"github.com/mori-go/mori-go/gpu"
	"github.com/mori-go/mori-go/internal/standin"
	"github.com/mori-go/mori-go/transport/ipc"
)

type side struct {
	key  string
	reg  *core.Registry
	b    *ipc.Backend
	desc core.EngineDesc
}

// pair returns two same-host paths on node, wired to each other.
func pair(t *testing.T, d *gpu.Driver, nodeA, nodeB string) (*side, *side) {
	t.Helper()
	a := &side{key: "a", reg: core.NewRegistry()}
	b := &side{key: "b", reg: core.NewRegistry()}
	peerOf := map[string]*side{"a": b, "b": a}
	for _, s := range []*side{a, b} {
		node := nodeA
		if s == b {
			node = nodeB
		}
		s.desc = core.EngineDesc{Key: s.key, NodeID: node, Host: "127.0.0.1", Port: 1}
		env := core.BackendEnv{LocalKey: s.key, NodeID: node, Registry: s.reg, GPU: d,
			Call: func(peer core.EngineDesc, body []byte) ([]byte, error) {
				return peerOf[s.key].b.HandleControl(s.key, body)
			}}
		var err error
		s.b, err = ipc.New(env, ipc.Options{NodeID: node, Host: "127.0.0.1", Port: 1, Workers: 2})
		require.NoError(t, err)
		t.Cleanup(func() { require.NoError(t, s.b.Close()) })
	}
	require.NoError(t, a.b.AddPeer(b.desc))
	require.NoError(t, b.b.AddPeer(a.desc))
	return a, b
}

// register allocates n bytes on device and registers them with s.
func (s *side) register(t *testing.T, d *gpu.Driver, n, device int) (*core.Region, core.MemoryDesc, []byte) {
	t.Helper()
	p, err := d.AllocDevice(uint64(n), device)
	require.NoError(t, err)
	t.Cleanup(func() { require.NoError(t, d.FreeDevice(p)) })
	r, err := s.reg.Add(p, uint64(n), core.LocationGPU, device, false)
	require.NoError(t, err)
	desc := core.MemoryDesc{EngineKey: s.key, ID: r.ID, Token: r.Token(), Device: int32(device), Location: core.LocationGPU, Addr: uint64(p), Size: uint64(n)}
	blob, err := s.b.RegisterMemory(r)
	require.NoError(t, err)
	if blob != nil {
		desc.Backends = append(desc.Backends, *blob)
	}
	return r, desc, unsafe.Slice((*byte)(core.PointerOf(p)), n)
}

func openDriver(t *testing.T, args ...string) *gpu.Driver {
	t.Helper()
	d, err := gpu.Open(gpu.Options{Library: standin.Build(t, args...), Vendor: gpu.VendorNVIDIA})
	require.NoError(t, err)
	t.Cleanup(func() { require.NoError(t, d.Close()) })
	return d
}

func transfer(op core.Op, peer string, local *core.Region, remote core.MemoryDesc, rs []core.Range) *core.Transfer {
	var n uint64
	for _, r := range rs {
		n += r.Size
	}
	return &core.Transfer{Op: op, UID: 1, Peer: peer, Local: local, Remote: remote, Ranges: rs, Bytes: n, Status: core.NewStatus()}
}

func TestSameHostWriteAndReadDeviceToDevice(t *testing.T) {
	d := openDriver(t)
	a, b := pair(t, d, "node", "node")
	const n = 1 << 20
	src, _, srcBytes := a.register(t, d, n, 0)
	_, dstDesc, dstBytes := b.register(t, d, n, 1)
	rand.Read(srcBytes)
	rs := []core.Range{{LocalOffset: 0, RemoteOffset: 4096, Size: 1000}, {LocalOffset: 8192, RemoteOffset: 0, Size: 4096}}

	w := transfer(core.OpWrite, "b", src, dstDesc, rs)
	ok, err := a.b.Reaches(w)
	require.NoError(t, err)
	require.True(t, ok, "same node, GPU memory on both sides: this path")
	a.b.Submit(w)
	require.Equal(t, core.StatusSuccess, w.Status.Wait(10*time.Second), w.Status.Message())
	for _, r := range rs {
		require.Equal(t, srcBytes[r.LocalOffset:r.LocalOffset+r.Size], dstBytes[r.RemoteOffset:r.RemoteOffset+r.Size])
	}

	clear(srcBytes)
	rd := transfer(core.OpRead, "b", src, dstDesc, rs)
	ok, err = a.b.Reaches(rd)
	require.NoError(t, err)
	require.True(t, ok)
	a.b.Submit(rd)
	require.Equal(t, core.StatusSuccess, rd.Status.Wait(10*time.Second), rd.Status.Message())
	for _, r := range rs {
		require.Equal(t, dstBytes[r.RemoteOffset:r.RemoteOffset+r.Size], srcBytes[r.LocalOffset:r.LocalOffset+r.Size])
	}
	st := a.b.Stats()
	require.Equal(t, uint64(2), st.Transfers)
	require.Equal(t, 1, st.Mappings, "one mapping, opened once")
}

func TestSameHostReachesOnlyPeersOnThisNode(t *testing.T) {
	d := openDriver(t)
	a, b := pair(t, d, "node-a", "node-b")
	src, _, _ := a.register(t, d, 4096, 0)
	_, dstDesc, _ := b.register(t, d, 4096, 0)
	ok, err := a.b.Reaches(transfer(core.OpWrite, "b", src, dstDesc, []core.Range{{Size: 1}}))
	require.NoError(t, err)
	require.False(t, ok, "another node: the data plane")
	require.Zero(t, a.b.Stats().Mappings)
}

func TestSameHostRefusesADeregisteredMemory(t *testing.T) {
	d := openDriver(t)
	a, b := pair(t, d, "node", "node")
	src, _, _ := a.register(t, d, 4096, 0)
	dst, dstDesc, _ := b.register(t, d, 4096, 0)
	b.b.DeregisterMemory(dst)
	_, err := b.reg.Remove(dst.ID)
	require.NoError(t, err)
	ok, err := a.b.Reaches(transfer(core.OpWrite, "b", src, dstDesc, []core.Range{{Size: 1}}))
	require.False(t, ok)
	require.Error(t, err)
	require.Equal(t, core.ErrNotFound, core.CodeOf(err), err.Error())
}

func TestSameHostMemoryTheDriverCannotMapTakesTheDataPlane(t *testing.T) {
	d := openDriver(t, "-DSTANDIN_STRICT_IPC") // the stand-in refuses handles of its own process, as CUDA does
	a, b := pair(t, d, "node", "node")
	src, _, _ := a.register(t, d, 4096, 0)
	_, dstDesc, _ := b.register(t, d, 4096, 0)
	for range 2 {
		ok, err := a.b.Reaches(transfer(core.OpWrite, "b", src, dstDesc, []core.Range{{Size: 1}}))
		require.NoError(t, err)
		require.False(t, ok)
	}
	require.Equal(t, uint64(2), a.b.Stats().Fallbacks)
	require.Zero(t, a.b.Stats().Mappings)
}

func TestSameHostSubmitAfterCloseFails(t *testing.T) {
	d := openDriver(t)
	a, b := pair(t, d, "node", "node")
	src, _, _ := a.register(t, d, 4096, 0)
	_, dstDesc, _ := b.register(t, d, 4096, 0)
	require.NoError(t, a.b.Close())
	w := transfer(core.OpWrite, "b", src, dstDesc, []core.Range{{Size: 1}})
	a.b.Submit(w)
	require.Equal(t, core.ErrBadState, w.Status.Wait(time.Second), w.Status.Message())
	require.Contains(t, w.Status.Message(), "closed")
}
