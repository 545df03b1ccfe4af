package rdma_test

import (
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/mori-go/mori-go/core"
	"github.com/mori-go/mori-go/verbs/sim"
)

// An address moved to another interface changes the port's GIDs: QPs
// addressed to the old GID fail, and the rebuilt ones must carry the new
// GID (read again on IBV_EVENT_GID_CHANGE), or they never connect again.
func TestSimGIDChangeIsFollowed(t *testing.T) {
	p, sd, dd := pairWithMemory(t, engineOpts{})
	uid := uint64(0)
	usableAgain(t, p, sd, dd, &uid)
	p.fab.ChangeAddress(p.hb.Device("mlx5_0"))
	usableAgain(t, p, sd, dd, &uid)
	// And the other way round.
	p.fab.ChangeAddress(p.ha.Device("mlx5_0"))
	usableAgain(t, p, sd, dd, &uid)
}

// A fatal device is given up, not rebuilt on: transfers move to the
// engine's other NIC and the peer's QPs reconnect to it.
func TestSimDeviceFatalMovesToAnotherNIC(t *testing.T) {
	p, sd, dd := pairWithMemory(t, engineOpts{}, sim.NIC{Name: "mlx5_0"}, sim.NIC{Name: "mlx5_1"})
	uid := uint64(0)
	usableAgain(t, p, sd, dd, &uid)
	dead := p.ha.Device("mlx5_0")
	require.NotEmpty(t, dead.QPNums())
	p.fab.FailDevice(dead)
	require.Eventually(t, func() bool {
		uid++
		return write(t, p.a, uid, sd, dd, core.Range{Size: 4096}).Wait(10*time.Second) == core.StatusSuccess
	}, 20*time.Second, 10*time.Millisecond, "transfers did not move to the other NIC")
	require.NotEmpty(t, p.ha.Device("mlx5_1").QPNums())
	// The other direction reconnects to the live NIC as well.
	src, dst := alloc(t, 4096), alloc(t, 4096)
	fill(src.Bytes(), 1)
	bs, ad := register(t, p.b, src), register(t, p.a, dst)
	back := uint64(0)
	require.Eventually(t, func() bool {
		back++
		return write(t, p.b, back, bs, ad, core.Range{Size: 4096}).Wait(10*time.Second) == core.StatusSuccess
	}, 20*time.Second, 10*time.Millisecond, "the peer's queue pairs did not reconnect to the live NIC")
	require.Equal(t, src.Bytes(), dst.Bytes())
	require.Empty(t, dead.QPNums(), "queue pairs left or rebuilt on the dead device")
}

// With no other NIC, transfers fail at once with the dead device named.
func TestSimDeviceFatalWithoutAnotherNICFailsClearly(t *testing.T) {
	p, sd, dd := pairWithMemory(t, engineOpts{})
	uid := uint64(0)
	usableAgain(t, p, sd, dd, &uid)
	p.fab.FailDevice(p.ha.Device("mlx5_0"))
	require.Eventually(t, func() bool {
		st := write(t, p.a, 100, sd, dd, core.Range{Size: 4096})
		st.Wait(10 * time.Second)
		msg := st.Message()
		return st.Code().Failed() && strings.Contains(msg, "mlx5_0") && strings.Contains(msg, "IBV_EVENT_DEVICE_FATAL")
	}, 10*time.Second, 10*time.Millisecond)
}
