package tcp

import (
	"net"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/mori-go/mori-go/core"
)

// An initiator that gives up on a write (it resets the stream, reports the
// transfer failed and may hand the memory to a new transfer at once) must
// not see the write land afterwards, however little the target lagged
// behind: here its serving goroutine is held just before it lands the
// payload, the initiator resets, and the goroutine runs on at once (no
// pause the old after-a-gap check would have noticed). The one-hour soak
// hit this as a write reported successful and then overwritten by the late
// bytes of an earlier, failed write into the same memory.
func TestWriteOfAResetInitiatorNeverLandsLate(t *testing.T) {
	for _, size := range []int{4 << 10, 1 << 20} { // from the read buffer; straight from the socket
		t.Run(byteSize(size), func(t *testing.T) {
			target := newNode(t, "late-target", nil, nil)
			held, release := make(chan struct{}), make(chan struct{})
			var once sync.Once
			target.b.srv.beforeLand = func() { // the first write only
				once.Do(func() {
					close(held)
					<-release
				})
			}
			g := newGuarded(t, target.reg, size)
			g.fill(1)
			before := g.snapshot()

			p := handshake(t, target, "late-initiator")
			payload := make([]byte, size)
			for i := range payload {
				payload[i] = byte(i*7 + 3)
			}
			p.write(request(reqWrite, ref(g.r), 9, 9, 1, []core.Range{{Size: uint64(size)}}, payload[:size/2]))
			select {
			case <-held:
			case <-time.After(ioDeadline):
				t.Fatal("the target never started landing the write")
			}
			if size > 4<<10 {
				p.write(payload[size/2:]) // the rest arrives while the target is held
			}
			tc := p.c.(*net.TCPConn)
			require.NoError(t, tc.SetLinger(0))
			require.NoError(t, tc.Close()) // the initiator gives up: reset
			close(release)

			require.Eventually(t, func() bool {
				_, ok := target.inbound.Pop(core.InboundKey{Peer: "late-initiator", UID: 9})
				return ok
			}, ioDeadline, time.Millisecond, "the target never ended the write")
			require.Equal(t, before, g.mem(), "bytes of a write whose initiator had reset the stream landed")
			g.checkGuards(t)
			checkLegit(t, target, g)
		})
	}
}

func byteSize(n int) string {
	if n >= 1<<20 {
		return "MiB"
	}
	return "KiB"
}
