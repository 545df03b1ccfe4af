package engine

import (
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/mori-go/mori-go/core"
)

func encodedMem(t *testing.T, id uint32) []byte {
	t.Helper()
	d := core.MemoryDesc{EngineKey: "e", ID: id, Device: -1, Location: core.LocationCPU, Size: 64}
	b, err := d.MarshalBinary()
	require.NoError(t, err)
	return b
}

func TestDescCacheEvictsTheLeastRecentlyUsed(t *testing.T) {
	c := newDescCache(2)
	a, b, x := encodedMem(t, 1), encodedMem(t, 2), encodedMem(t, 3)
	for _, enc := range [][]byte{a, b, a, x} { // a is used again before x arrives: b goes
		d, err := c.decode(enc)
		require.NoError(t, err)
		var want core.MemoryDesc
		require.NoError(t, want.UnmarshalBinary(enc))
		require.True(t, want.Equal(&d))
	}
	require.True(t, c.c.Contains(string(a)), "recently used: kept")
	require.False(t, c.c.Contains(string(b)), "least recently used: evicted")
	require.True(t, c.c.Contains(string(x)))
	require.Equal(t, 2, c.c.Len(), "bounded")
}

func TestDescCacheRefusesMalformedDescriptors(t *testing.T) {
	c := newDescCache(2)
	_, err := c.decode([]byte("MGM\x09junk"))
	require.Error(t, err)
	require.Equal(t, core.ErrInvalidArgs, core.CodeOf(err))
	require.Contains(t, err.Error(), "memory desc")
	require.Zero(t, c.c.Len(), "nothing cached for a refused descriptor")
}
