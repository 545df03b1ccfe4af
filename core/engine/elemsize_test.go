package engine_test

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/mori-go/mori-go/core"
	"github.com/mori-go/mori-go/core/engine"
	"github.com/mori-go/mori-go/internal/kvdata"
	"github.com/mori-go/mori-go/stack"
	"github.com/mori-go/mori-go/transport/tcp"
)

// shuffledFrames is how many compressed frames e's data plane shuffled.
func shuffledFrames(t *testing.T, e *engine.Engine) (frames, shuffled uint64) {
	t.Helper()
	b, ok := e.DataBackend().(interface{ CompressionStats() tcp.CompressionStats })
	require.True(t, ok, "the TCP data plane reports compression")
	cs := b.CompressionStats()
	return cs.FramesOut, cs.ShuffledOut
}

func TestElementSizeOfARegistrationAndOfATransfer(t *testing.T) {
	a, b := pair(t, func(c *stack.Config) { c.TCP.Compression = "zstd" })
	const n = 2<<20 + 3 // not a whole number of elements
	src, dst := alloc(t, n), alloc(t, n)
	require.NoError(t, kvdata.Fill(kvdata.BF16, src.Bytes(), 1))
	sd, err := a.RegisterMemoryWith(src.Addr(), n, -1, core.LocationCPU, core.RegionOptions{ElemSize: 2})
	require.NoError(t, err)
	dd := register(t, b, dst)
	ranges := func() []core.Range { return []core.Range{{Size: n}} }

	// The registration's element size: every frame shuffled.
	st := a.Submit(core.OpWrite, []engine.Request{{Local: sd, Remote: dd, Ranges: ranges(), UID: 1}})[0]
	require.Equal(t, core.StatusSuccess, st.Wait(10*time.Second), st.Message())
	require.Equal(t, src.Bytes(), dst.Bytes())
	frames, shuffled := shuffledFrames(t, a)
	require.Positive(t, frames)
	require.Equal(t, frames, shuffled)

	// A transfer's 1 turns the shuffle off for that transfer only.
	clear(dst.Bytes())
	st = a.Submit(core.OpWrite, []engine.Request{{Local: sd, Remote: dd, Ranges: ranges(), UID: 2, ElemSize: 1}})[0]
	require.Equal(t, core.StatusSuccess, st.Wait(10*time.Second), st.Message())
	require.Equal(t, src.Bytes(), dst.Bytes())
	frames2, shuffled2 := shuffledFrames(t, a)
	require.Greater(t, frames2, frames)
	require.Equal(t, shuffled, shuffled2, "no frame of the unshuffled transfer was shuffled")

	// Element sizes out of bounds are refused, at registration and per
	// transfer, saying why.
	for _, bad := range []int{-1, core.MaxElemSize + 1} {
		st = a.Submit(core.OpWrite, []engine.Request{{Local: sd, Remote: dd, Ranges: ranges(), UID: 3, ElemSize: bad}})[0]
		require.Equal(t, core.ErrInvalidArgs, st.Wait(10*time.Second))
		require.Contains(t, st.Message(), "element size")
		other := alloc(t, 4096)
		_, err = a.RegisterMemoryWith(other.Addr(), 4096, -1, core.LocationCPU, core.RegionOptions{ElemSize: bad})
		require.Equal(t, core.ErrInvalidArgs, core.CodeOf(err))
		require.ErrorContains(t, err, "element size")
	}
}
