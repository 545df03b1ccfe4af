package stack_test

import (
	"fmt"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/mori-go/mori-go/core"
	"github.com/mori-go/mori-go/core/engine"
	"github.com/mori-go/mori-go/stack"
)

// noDevice is an RDMA factory on a host without a usable device.
func noDevice(core.BackendEnv, any) (core.Backend, error) {
	return nil, fmt.Errorf("%w: no active port", core.ErrNotSupported)
}

func start(t *testing.T, key, devices string) *engine.Engine {
	t.Helper()
	e, err := stack.New(stack.Config{Config: engine.Config{Key: key}, RDMA: noDevice, RDMADevices: devices})
	require.NoError(t, err)
	t.Cleanup(func() { require.NoError(t, e.Close()) })
	return e
}

func TestRDMAWithoutADeviceServesTCPAndSaysWhy(t *testing.T) {
	e := start(t, "fallback", "")
	got, err := e.CreateBackend(core.BackendRDMA, stack.RDMAConfigJSON(""))
	require.NoError(t, err)
	require.Equal(t, core.BackendTCP, got)
	require.Contains(t, e.RDMAFallback(), "no active port")
}

func TestANamedDeviceThatIsUnusableIsRefused(t *testing.T) {
	for name, c := range map[string]struct{ engineDevices, backendJSON string }{
		"engine config":  {"mlx5_9", ""},
		"backend config": {"", `{"devices": "mlx5_9"}`},
	} {
		t.Run(name, func(t *testing.T) {
			e := start(t, "named-"+name, c.engineDevices)
			_, err := e.CreateBackend(core.BackendRDMA, stack.RDMAConfigJSON(c.backendJSON))
			require.Error(t, err)
			require.Contains(t, err.Error(), `RDMA device "mlx5_9" was named but is not usable`)
			require.Contains(t, err.Error(), "no active port")
			require.Nil(t, e.DataBackend(), "no TCP behind the user's back")
		})
	}
}

func TestRDMAConfigJSONIsChecked(t *testing.T) {
	e := start(t, "badjson", "")
	_, err := e.CreateBackend(core.BackendRDMA, stack.RDMAConfigJSON("{nope"))
	require.Equal(t, core.ErrInvalidArgs, core.CodeOf(err))
	require.Contains(t, err.Error(), "backend config")
}
