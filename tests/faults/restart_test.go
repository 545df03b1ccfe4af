package faults

import (
	"net"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/mori-go/mori-go/core"
)

// freePort returns a TCP port on loopback that was free a moment ago.
func freePort(t *testing.T) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// TestPeerRestarted: the target process is SIGKILLed and started again at
// the same address (control and data ports), under the same key and under
// a new key (as SGLang does: a new engine, a new key). The initiator's
// transfers through the descriptors of the dead process must fail fast or
// succeed only after the new process was registered; nothing may land in
// the new process through a stale memory descriptor.
func TestPeerRestarted(t *testing.T) {
	for _, c := range []struct {
		name, key2 string
		sameKey    bool
	}{{"same key", "faults-restart", true}, {"new key", "faults-restart-2", false}} {
		t.Run(c.name, func(t *testing.T) {
			v := newEnv(t)
			a := v.engine("faults-restart-initiator")
			const size = 1 << 20
			src := v.alloc(size)
			sd := register(t, a, src)
			cfg := childConfig{Role: "target", Key: "faults-restart", Host: "127.0.0.1", Mem: size, Port: freePort(t), DataPort: freePort(t)}
			old := startChild(t, cfg)
			require.NoError(t, a.RegisterRemoteEngine(old.engineDesc()))
			oldMem := old.memDesc()
			fillPattern(src.Bytes(), 1)
			requireSuccess(t, write(a, sd, oldMem, 0, 0, size), "write to the first process")
			require.True(t, old.call(msg{Cmd: "check", Size: size, Seed: 1}, 10*time.Second).OK)

			old.kill()
			killed := time.Now()
			cfg.Key = c.key2
			fresh := startChild(t, cfg)
			restarted := time.Since(killed)
			require.True(t, fresh.call(msg{Cmd: "poison", Size: size, Seed: 0xEE}, 10*time.Second).OK)
			freshMem := fresh.memDesc()
			require.Equal(t, oldMem.ID, freshMem.ID, "the new process registered its memory under the same id (the case a stale descriptor could hit)")

			// Stale descriptors, before and after the initiator has
			// reconnected (a write is tried every 100 ms for 2 s).
			fillPattern(src.Bytes(), 2)
			outcomes := map[core.StatusCode]int{}
			first := map[core.StatusCode]string{}
			var worst time.Duration
			landed := 0
			deadline := time.Now().Add(2 * time.Second)
			for time.Now().Before(deadline) {
				start := time.Now()
				st := write(a, sd, oldMem, 0, 0, size)
				code := st.Wait(transferTimeout + waitSlack)
				took := time.Since(start)
				require.True(t, code.Terminal(), "a write through a stale descriptor did not end within its timeout")
				require.Less(t, took, transferTimeout+time.Second)
				worst = max(worst, took)
				if code == core.StatusSuccess {
					landed++
				}
				if outcomes[code]++; outcomes[code] == 1 {
					first[code] = st.Message()
				}
				time.Sleep(100 * time.Millisecond)
			}
			untouched := fresh.call(msg{Cmd: "untouched", Size: size, Seed: 0xEE}, 10*time.Second)
			t.Logf("%s: restarted in %s; writes through the stale descriptors for 2 s: %v (first message of each: %q), slowest ended in %s; the new process's memory untouched: %v %s",
				c.name, restarted.Round(time.Millisecond), outcomes, first, worst.Round(time.Microsecond), untouched.OK, untouched.Err)
			// Every stale write fails fast, and nothing lands: the new
			// process has not admitted this initiator yet (it never
			// registered it), and with a new key the engine answering at
			// the old address is not the one registered.
			require.Zero(t, landed, "a write through a stale descriptor succeeded against the new process: %v", outcomes)
			require.True(t, untouched.OK, "a stale write landed in the new process: %s", untouched.Err)

			// Registering the new process makes transfers work again.
			require.NoError(t, a.RegisterRemoteEngine(fresh.engineDesc()))
			// Even now, the old memory descriptor is refused: its id is
			// the new registration's, its access token is not (the
			// token is what tells the registrations apart).
			st := write(a, sd, oldMem, 0, 0, size)
			code := st.Wait(transferTimeout + waitSlack)
			require.True(t, code.Failed(), "a write through the old memory descriptor, after registering the new process, ended in %s", code)
			untouched = fresh.call(msg{Cmd: "untouched", Size: size, Seed: 0xEE}, 10*time.Second)
			require.True(t, untouched.OK, "a write through the old memory descriptor landed in the new process: %s", untouched.Err)
			t.Logf("%s: after registering the new process, a write through the old memory descriptor: %s: %s", c.name, code, st.Message())
			fillPattern(src.Bytes(), 3)
			requireSuccess(t, write(a, sd, freshMem, 0, 0, size), "write to the new process after registering it")
			require.True(t, fresh.call(msg{Cmd: "check", Size: size, Seed: 3}, 10*time.Second).OK, "the write after re-registration is not intact")
		})
	}
}
