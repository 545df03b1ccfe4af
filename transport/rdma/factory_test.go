package rdma_test

import (
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/mori-go/mori-go/core"
	"github.com/mori-go/mori-go/core/engine"
	"github.com/mori-go/mori-go/stack"
	"github.com/mori-go/mori-go/transport/rdma"
	"github.com/mori-go/mori-go/verbs"
)

// On a machine without an active RDMA port (this one: no RDMA device, no
// InfiniBand in the kernel) the production factory reports ErrNotSupported
// and an engine in auto mode serves RDMA requests over TCP.
func TestProductionFactoryFallsBackToTCPWithoutRDMA(t *testing.T) {
	b, err := rdma.Factory(testEnv(), rdma.Config{})
	if err == nil {
		b.Close()
		t.Skip("this machine has an active RDMA port")
	}
	require.ErrorIs(t, err, verbs.ErrNotSupported)

	e, err := stack.New(stack.Config{Config: engine.Config{Key: "auto", Mode: engine.ModeAuto, Logger: testLogger()}, RDMA: rdma.Factory})
	require.NoError(t, err)
	defer e.Close()
	typ, err := e.CreateBackend(core.BackendRDMA, rdma.Config{QPPerTransfer: 4})
	require.NoError(t, err)
	require.Equal(t, core.BackendTCP, typ)

	strict, err := stack.New(stack.Config{Config: engine.Config{Key: "strict", Mode: engine.ModeRDMA, Logger: testLogger()}, RDMA: rdma.Factory})
	require.NoError(t, err)
	defer strict.Close()
	_, err = strict.CreateBackend(core.BackendRDMA, nil)
	require.ErrorIs(t, err, verbs.ErrNotSupported)
}
