package engine_test

import (
	"crypto/rand"
	"encoding/binary"
	"net"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/mori-go/mori-go/core"
	"github.com/mori-go/mori-go/core/engine"
	"github.com/mori-go/mori-go/stack"
)

// silentPeer listens and accepts, but never says a word: a decode whose
// host is up and whose process hangs. It returns a descriptor that points
// both planes at it.
func silentPeer(t *testing.T, key string) core.EngineDesc {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	var conns []net.Conn
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			conns = append(conns, c)
		}
	}()
	t.Cleanup(func() {
		l.Close()
		<-done
		for _, c := range conns {
			c.Close()
		}
	})
	port := uint16(l.Addr().(*net.TCPAddr).Port)
	return core.EngineDesc{Key: key, Host: "127.0.0.1", Port: port,
		Backends: []core.BackendBlob{{Type: core.BackendTCP, Data: binary.LittleEndian.AppendUint16(nil, port)}}}
}

// SGLang's prefill registers every decode on one bootstrap thread, and each
// decode sends its registration once: a decode that hangs must not hold up
// the others, and transfers to them must work meanwhile.
func TestRegistrationOfAHungPeerDoesNotStallTheOthers(t *testing.T) {
	hour := func(c *stack.Config) { c.HandshakeTimeout = time.Hour } // waiting for it would never end
	prefill := newEngine(t, "prefill", hour)
	decode := newEngine(t, "decode", hour)

	require.NoError(t, prefill.AddRemoteEngine(silentPeer(t, "decode-hung")), "returns without waiting for the handshake")
	require.NoError(t, prefill.AddRemoteEngine(decode.Desc()))
	require.NoError(t, decode.AddRemoteEngine(prefill.Desc()))

	src, dst := alloc(t, 64<<10), alloc(t, 64<<10)
	rand.Read(src.Bytes())
	sd, dd := register(t, prefill, src), register(t, decode, dst)
	st := prefill.Submit(core.OpWrite, []engine.Request{{Local: sd, Remote: dd, UID: 1,
		Ranges: []core.Range{{Size: 64 << 10}}}})
	require.Equal(t, core.StatusSuccess, st[0].Wait(20*time.Second), st[0].Message())
	require.Equal(t, src.Bytes(), dst.Bytes())
}

// A peer that is down when it is registered: the registration succeeds,
// transfers fail saying why, and once the peer is up a later transfer
// connects and succeeds (the pair is not stranded).
func TestAPeerDownAtRegistrationIsConnectedOnDemandLater(t *testing.T) {
	prefill := newEngine(t, "prefill", func(c *stack.Config) { c.HandshakeTimeout = 2 * time.Second })
	// Reserve a control port for the decode, closed until it starts.
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	port := l.Addr().(*net.TCPAddr).Port
	require.NoError(t, l.Close())
	down := core.EngineDesc{Key: "decode", Host: "127.0.0.1", Port: uint16(port),
		Backends: []core.BackendBlob{{Type: core.BackendTCP, Data: []byte{0, 0}}}}
	require.NoError(t, prefill.AddRemoteEngine(down))

	src := alloc(t, 4096)
	sd := register(t, prefill, src)
	remote := core.MemoryDesc{EngineKey: "decode", ID: 1, Location: core.LocationCPU, Size: 4096, Device: -1}
	st := prefill.Submit(core.OpWrite, []engine.Request{{Local: sd, Remote: remote, UID: 1, Ranges: []core.Range{{Size: 4096}}}})
	code := st[0].Wait(20 * time.Second)
	require.True(t, code.Failed(), "%s", code)
	require.Contains(t, st[0].Message(), `remote engine "decode"`)

	decode := newEngine(t, "decode", func(c *stack.Config) { c.Port = port })
	require.NoError(t, decode.AddRemoteEngine(prefill.Desc()))
	dst := alloc(t, 4096)
	dd := register(t, decode, dst)
	rand.Read(src.Bytes())
	// The decode's data port was unknown when it was registered: register
	// its real descriptor, as a restarted decode's registration does.
	require.NoError(t, prefill.AddRemoteEngine(decode.Desc()))
	var last *core.Status
	for uid := uint64(2); uid < 200; uid++ { // until the backoff has passed
		last = prefill.Submit(core.OpWrite, []engine.Request{{Local: sd, Remote: dd, UID: uid, Ranges: []core.Range{{Size: 4096}}}})[0]
		if last.Wait(20*time.Second) == core.StatusSuccess {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	require.Equal(t, core.StatusSuccess, last.Code(), last.Message())
	require.Equal(t, src.Bytes(), dst.Bytes())
}

// Without a new registration, a peer that was down is tried again by the
// first transfer after the backoff.
func TestTheFirstTransferAfterTheBackoffReconnects(t *testing.T) {
	a := newEngine(t, "a", func(c *stack.Config) { c.HandshakeTimeout = 2 * time.Second })
	b := newEngine(t, "b", nil)
	desc := b.Desc()
	desc.Port = 1 // nothing listens there
	require.NoError(t, a.AddRemoteEngine(desc))
	src, dst := alloc(t, 4096), alloc(t, 4096)
	sd, dd := register(t, a, src), register(t, b, dst)
	st := a.Submit(core.OpWrite, []engine.Request{{Local: sd, Remote: dd, UID: 1, Ranges: []core.Range{{Size: 4096}}}})
	require.True(t, st[0].Wait(20*time.Second).Failed())
	st = a.Submit(core.OpWrite, []engine.Request{{Local: sd, Remote: dd, UID: 2, Ranges: []core.Range{{Size: 4096}}}})
	require.True(t, st[0].Wait(20*time.Second).Failed())
	require.Contains(t, st[0].Message(), "next attempt in", "within the backoff: failed at once with the last reason")
}

func TestDeregisteringAnUnknownPeerDoesNothing(t *testing.T) {
	a := newEngine(t, "a", nil)
	require.NoError(t, a.DeregisterRemoteEngine(core.EngineDesc{Key: "never-registered"}))
}

func TestRemoveBackendThenCreateAgainReconnects(t *testing.T) {
	a, b := pair(t, nil)
	src, dst := alloc(t, 4096), alloc(t, 4096)
	sd, dd := register(t, a, src), register(t, b, dst)
	write := func(uid uint64) *core.Status {
		st := a.Submit(core.OpWrite, []engine.Request{{Local: sd, Remote: dd, UID: uid, Ranges: []core.Range{{Size: 4096}}}})[0]
		st.Wait(20 * time.Second)
		return st
	}
	rand.Read(src.Bytes())
	require.Equal(t, core.StatusSuccess, write(1).Code())

	require.NoError(t, a.RemoveBackend(core.BackendRDMA), "a type it does not run: nothing to do")
	require.NoError(t, a.RemoveBackend(core.BackendTCP))
	require.Nil(t, a.DataBackend())
	desc := a.Desc()
	require.Nil(t, desc.Blob(core.BackendTCP), "the descriptor no longer offers it")
	st := write(2)
	require.Equal(t, core.ErrBadState, st.Code(), st.Message())
	require.Contains(t, st.Message(), "create backend first")

	_, err := a.CreateBackend(core.BackendTCP, nil)
	require.NoError(t, err)
	rand.Read(src.Bytes())
	st = write(3)
	require.Equal(t, core.StatusSuccess, st.Code(), st.Message())
	require.Equal(t, src.Bytes(), dst.Bytes())
}
