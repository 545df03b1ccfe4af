package core

import (
	"runtime"
	"testing"
	"time"
	"unsafe"

	"github.com/stretchr/testify/require"
)

// The registry never dereferences addresses except through Bytes, so these
// tests use made-up addresses.

func TestRegistryRefusesOverlapOnBothSides(t *testing.T) {
	g := NewRegistry()
	mid, err := g.Add(0x10000, 0x1000, LocationCPU, -1, true)
	require.NoError(t, err)
	for _, c := range []struct {
		name       string
		addr, size uint64
	}{
		{"same", 0x10000, 0x1000},
		{"inside", 0x10100, 0x10},
		{"covers", 0xf000, 0x3000},
		{"tail over head", 0xf000, 0x1001},
		{"head over tail", 0x10fff, 0x10},
		{"same start longer", 0x10000, 0x2000},
	} {
		_, err := g.Add(uintptr(c.addr), c.size, LocationCPU, -1, true)
		require.ErrorContains(t, err, "overlaps region 1", c.name)
		require.Equal(t, ErrInvalidArgs, CodeOf(err), c.name)
	}
	// Touching neighbours on either side are fine.
	below, err := g.Add(0xf000, 0x1000, LocationCPU, -1, true)
	require.NoError(t, err)
	above, err := g.Add(0x11000, 0x1000, LocationGPU, 3, true)
	require.NoError(t, err)
	require.Equal(t, 3, g.Len())
	// A region between two others overlapping the upper one only.
	_, err = g.Add(0x20000, 0x1000, LocationCPU, -1, true)
	require.NoError(t, err)
	_, err = g.Add(0x1f800, 0x1000, LocationCPU, -1, true)
	require.ErrorContains(t, err, "overlaps region")

	var order []uint32
	g.Each(func(r *Region) { order = append(order, r.ID) })
	require.Equal(t, []uint32{below.ID, mid.ID, above.ID, 4}, order, "Each walks in address order")
}

func TestRegistryRefusesBadRanges(t *testing.T) {
	g := NewRegistry()
	_, err := g.Add(0, 16, LocationCPU, -1, true)
	require.ErrorContains(t, err, "null pointer")
	_, err = g.Add(0x1000, 0, LocationCPU, -1, true)
	require.ErrorContains(t, err, "empty range")
	_, err = g.Add(^uintptr(0)-15, 16, LocationCPU, -1, true)
	require.ErrorContains(t, err, "wraps")
	_, err = g.Add(0x1000, 16, LocationUnknown, -1, true)
	require.ErrorContains(t, err, "unknown location")
	require.Zero(t, g.Len())
}

func TestRegistryIDsAreNeverReused(t *testing.T) {
	g := NewRegistry()
	seen := map[uint32]bool{}
	for i := 0; i < 100; i++ {
		r, err := g.Add(0x100000, 0x1000, LocationCPU, -1, true)
		require.NoError(t, err)
		require.NotZero(t, r.ID)
		require.False(t, seen[r.ID], "id %d reused", r.ID)
		seen[r.ID] = true
		got, err := g.Get(r.ID)
		require.NoError(t, err)
		require.Same(t, r, got)
		_, err = g.Remove(r.ID)
		require.NoError(t, err)
		_, err = g.Get(r.ID)
		require.ErrorContains(t, err, "is not registered")
		require.Equal(t, ErrNotFound, CodeOf(err))
	}
	_, err := g.Remove(12345)
	require.ErrorContains(t, err, "deregister memory 12345: not registered")
	// Wrapping the counter skips 0 and ids still in use.
	g = NewRegistry()
	keep, err := g.Add(0x1000, 16, LocationCPU, -1, true)
	require.NoError(t, err)
	g.nextID = ^uint32(0)
	r1, err := g.Add(0x2000, 16, LocationCPU, -1, true)
	require.NoError(t, err)
	require.Equal(t, ^uint32(0), r1.ID)
	r2, err := g.Add(0x3000, 16, LocationCPU, -1, true)
	require.NoError(t, err)
	require.NotEqual(t, uint32(0), r2.ID)
	require.NotEqual(t, keep.ID, r2.ID)
}

func TestRegionCheckRange(t *testing.T) {
	r := NewRegion(5, 0x1000, 100, LocationCPU, -1, true)
	require.NoError(t, r.CheckRange(0, 100))
	require.NoError(t, r.CheckRange(99, 1))
	for _, c := range []struct{ off, size uint64 }{{0, 101}, {100, 1}, {^uint64(0), 2}, {1, ^uint64(0)}, {^uint64(0) - 10, 20}} {
		err := r.CheckRange(c.off, c.size)
		require.ErrorContains(t, err, "memory 5: range offset", "%+v", c)
		require.Equal(t, ErrInvalidArgs, CodeOf(err))
	}
	require.ErrorContains(t, r.CheckRange(3, 0), "zero-length")
}

func TestRemoveWaitsForUses(t *testing.T) {
	g := NewRegistry()
	r, err := g.Add(0x1000, 16, LocationCPU, -1, true)
	require.NoError(t, err)
	require.NoError(t, r.Use())
	require.NoError(t, r.Use())
	removed := make(chan struct{})
	go func() {
		defer close(removed)
		_, err := g.Remove(r.ID)
		require.NoError(t, err)
	}()
	// The region leaves the registry at once, but Remove waits for the uses.
	require.Eventually(t, func() bool { _, err := g.Get(r.ID); return err != nil }, 10*time.Second, time.Millisecond)
	select {
	case <-removed:
		t.Fatal("Remove returned while the region was in use")
	case <-time.After(50 * time.Millisecond):
	}
	r.Release()
	select {
	case <-removed:
		t.Fatal("Remove returned while the region was in use")
	case <-time.After(50 * time.Millisecond):
	}
	// New uses are refused once removal began.
	err = r.Use()
	require.ErrorContains(t, err, "was deregistered")
	require.Equal(t, ErrNotFound, CodeOf(err))
	r.Release()
	select {
	case <-removed:
	case <-time.After(10 * time.Second):
		t.Fatal("Remove did not return after the last Release")
	}
}

func TestRegionBytes(t *testing.T) {
	buf := make([]byte, 64) // read only through Bytes: never handed to a peer
	for i := range buf {
		buf[i] = byte(i)
	}
	g := NewRegistry()
	reg, err := g.Add(addrOf(buf), 64, LocationCPU, -1, true)
	require.NoError(t, err)
	require.Equal(t, buf[10:20], reg.Bytes(10, 10))
	dev := NewRegion(2, addrOf(buf), 64, LocationGPU, 0, false)
	require.Panics(t, func() { dev.Bytes(0, 1) })
	runtime.KeepAlive(buf)
}

func addrOf(b []byte) uintptr { return uintptr(unsafe.Pointer(&b[0])) }

func TestRegistrationElementSize(t *testing.T) {
	g := NewRegistry()
	r, err := g.AddWith(0x1000, 16, LocationCPU, -1, true, RegionOptions{ElemSize: 2})
	require.NoError(t, err)
	require.Equal(t, 2, r.ElemSize)
	plain, err := g.Add(0x2000, 16, LocationCPU, -1, true)
	require.NoError(t, err)
	require.Zero(t, plain.ElemSize, "no element size: the data plane's default")
	for _, bad := range []int{-1, MaxElemSize + 1, 1 << 20} {
		_, err := g.AddWith(0x3000, 16, LocationCPU, -1, true, RegionOptions{ElemSize: bad})
		require.Equal(t, ErrInvalidArgs, CodeOf(err))
		require.ErrorContains(t, err, "register memory 0x3000 len 16: element size")
	}
	require.Equal(t, 2, g.Len(), "nothing registered by a refused call")
}
