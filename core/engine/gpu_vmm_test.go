package engine_test

import (
	"crypto/rand"
	"log/slog"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/mori-go/mori-go/core"
	"github.com/mori-go/mori-go/core/engine"
	"github.com/mori-go/mori-go/stack"
)

// VMM memory (PyTorch's expandable_segments): buffers span several
// mappings. They register (checked mapping by mapping), and between
// engines of one host, whose same-host path cannot export them with legacy
// IPC, transfers take the data backend with the bytes intact.
func TestGPUVMMMemory(t *testing.T) {
	d := standinGPU(t, "-DSTANDIN_VMM_CHUNK=262144")
	logs := &syncBuffer{}
	a, b := gpuPair(t, d, "node", "node", func(c *stack.Config) {
		if strings.HasPrefix(c.Key, "decode") {
			c.Logger = slog.New(slog.NewTextHandler(logs, nil))
		}
	})
	const n = 2<<20 + 4096 // nine 256 KiB mappings
	srcP, src := allocGPU(t, d, n, 0)
	dstP, dst := allocGPU(t, d, n, 1)
	info, err := d.PointerInfo(srcP)
	require.NoError(t, err)
	require.True(t, info.VMM)
	require.Less(t, info.AllocSize, uint64(n), "the buffer spans mappings")
	rand.Read(src)

	sd, dd := registerGPU(t, a, srcP, n, 0), registerGPU(t, b, dstP, n, 1)
	require.Nil(t, dd.Blob(core.BackendXGMI), "not exported for the same-host path")
	require.Contains(t, logs.String(), "VMM memory")
	ranges := gpuRanges(n)
	uid := a.AllocateTransferUID()
	wait(t, a.Submit(core.OpWrite, []engine.Request{{Local: sd, Remote: dd, Ranges: cloneRanges(ranges), UID: uid}}))
	sameRanges(t, src, dst, ranges)
	_, ok := b.PopInboundTransferStatus(a.Key(), uid)
	require.True(t, ok, "went over the data backend")
}
