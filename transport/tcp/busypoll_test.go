package tcp

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/mori-go/mori-go/core"
)

// Transfers are intact whatever the busy poll: off, the default, and one
// much longer than a transfer (every wait then ends by the data, never by
// the poll's time).
func TestTransfersWithEveryBusyPoll(t *testing.T) {
	atLeastTwoProcs(t)
	for _, bp := range []time.Duration{-1, 0, time.Second} {
		t.Run(bp.String(), func(t *testing.T) {
			mod := func(c *Config) { c.BusyPoll = bp }
			ini := newNode(t, "bp-initiator", nil, mod)
			target := newNode(t, "bp-target", nil, mod)
			require.NoError(t, ini.b.AddPeer(target.desc()))
			src := newGuarded(t, ini.reg, 1<<20)
			back := newGuarded(t, ini.reg, 1<<20)
			dst := newGuarded(t, target.reg, 1<<20)
			src.fill(3)
			start := time.Now()
			onThread(t, func() {
				for i := range 50 {
					size := uint64(1+i*997) % (1 << 20)
					rg := []core.Range{{LocalOffset: 0, RemoteOffset: uint64(i) * 64, Size: min(size, 1<<20-uint64(i)*64)}}
					require.Equal(t, core.StatusSuccess, core.WaitAllThread([]*core.Status{ini.start(core.OpWrite, uint64(2*i), src.r, target.key, dst.r, rg, 0)}, ioDeadline))
					require.Equal(t, core.StatusSuccess, core.WaitAllThread([]*core.Status{ini.start(core.OpRead, uint64(2*i+1), back.r, target.key, dst.r, rg, 0)}, ioDeadline))
					require.Equal(t, src.mem()[:rg[0].Size], back.mem()[:rg[0].Size])
				}
			})
			require.Less(t, time.Since(start), 25*time.Second, "100 transfers waited for the poll's time")
			src.checkGuards(t)
			back.checkGuards(t)
			dst.checkGuards(t)
		})
	}
}
