package rdma_test

import (
	"bytes"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/mori-go/mori-go/core"
)

// MR_QUERY hands out a region's RDMA keys: only to whoever presents the
// region's token. A descriptor forged with a guessed id (no token) or one
// carrying another region's token is refused, and no byte moves.
func TestSimKeyQueryNeedsTheToken(t *testing.T) {
	fab := newFabric()
	ha, hb := fab.AddHost("a", nic0), fab.AddHost("b", nic0)
	b := newBareEngine(t, "decode", hb)
	dst, other := alloc(t, 1<<16), alloc(t, 4096)
	for i := range dst.Bytes() {
		dst.Bytes()[i] = 0x5c
	}
	dd, err := b.RegisterMemory(dst.Addr(), 1<<16, -1, core.LocationCPU)
	require.NoError(t, err)
	od, err := b.RegisterMemory(other.Addr(), 4096, -1, core.LocationCPU)
	require.NoError(t, err)
	require.Nil(t, dd.Blob(core.BackendRDMA), "registered before the backend: keys come by MR_QUERY")
	createRDMA(t, b, defaultRDMA())
	a := newSimEngine(t, "prefill", ha, engineOpts{cfg: defaultRDMA()})
	require.NoError(t, a.RegisterRemoteEngine(b.Desc()))
	src := alloc(t, 1<<16)
	fill(src.Bytes(), 1)
	sd := register(t, a, src)
	orig := append([]byte(nil), src.Bytes()...)

	guessed := core.MemoryDesc{EngineKey: dd.EngineKey, ID: dd.ID, Location: core.LocationCPU, Size: dd.Size}
	wrong := dd
	wrong.Token = od.Token
	for i, forged := range []core.MemoryDesc{guessed, wrong} {
		st := write(t, a, uint64(10+i), sd, forged, core.Range{Size: 1 << 16})
		require.True(t, st.Wait(10*time.Second).Failed())
		require.Contains(t, st.Message(), "access denied")
		st = read(t, a, uint64(20+i), sd, forged, core.Range{Size: 1 << 16})
		require.True(t, st.Wait(10*time.Second).Failed())
		require.Contains(t, st.Message(), "access denied")
	}
	require.Equal(t, bytes.Repeat([]byte{0x5c}, 1<<16), dst.Bytes(), "not a byte written")
	require.Equal(t, orig, src.Bytes(), "not a byte read")
	require.Positive(t, b.Security().DeniedAccesses)

	st := write(t, a, 30, sd, dd, core.Range{Size: 1 << 16})
	require.Equal(t, core.StatusSuccess, st.Wait(10*time.Second), st.Message())
	require.Equal(t, src.Bytes(), dst.Bytes())
}
