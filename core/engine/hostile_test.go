package engine_test

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/mori-go/mori-go/core"
	"github.com/mori-go/mori-go/core/engine"
	"github.com/mori-go/mori-go/stack"
)

func TestSharedSecretBetweenEngines(t *testing.T) {
	secret := func(s string) func(*stack.Config) {
		return func(c *stack.Config) { c.Secret = []byte(s) }
	}
	a, b := pair(t, secret("team"))
	src, dst := alloc(t, 1<<16), alloc(t, 1<<16)
	src.Bytes()[5] = 42
	sd, dd := register(t, a, src), register(t, b, dst)
	st := a.Submit(core.OpWrite, []engine.Request{{Local: sd, Remote: dd, Ranges: []core.Range{{Size: 64}}, UID: 1}})
	require.Equal(t, core.StatusSuccess, core.WaitAll(st, 10*time.Second), st[0].Message())
	require.Equal(t, byte(42), dst.Bytes()[5])

	for name, mod := range map[string]func(*stack.Config){"wrong secret": secret("guess"), "no secret": nil} {
		t.Run(name, func(t *testing.T) {
			m := newEngine(t, "mallory-"+strings.ReplaceAll(name, " ", "-"), mod)
			err := m.RegisterRemoteEngine(b.Desc())
			require.ErrorContains(t, err, "authentication failed")
		})
	}
	require.Equal(t, byte(42), dst.Bytes()[5])
	require.Equal(t, make([]byte, 5), dst.Bytes()[:5])
}

func TestLongestEngineKeysWorkEndToEnd(t *testing.T) {
	long := func(prefix string) string { return prefix + strings.Repeat("k", core.MaxKeyLen-len(prefix)) }
	a := newEngine(t, long("a"), nil)
	b := newEngine(t, long("b"), nil)
	require.NoError(t, a.RegisterRemoteEngine(b.Desc()))
	require.NoError(t, b.RegisterRemoteEngine(a.Desc()))
	src, dst := alloc(t, 4096), alloc(t, 4096)
	sd, dd := register(t, a, src), register(t, b, dst)
	st := a.Submit(core.OpWrite, []engine.Request{{Local: sd, Remote: dd, Ranges: []core.Range{{Size: 4096}}, UID: 1}})
	require.Equal(t, core.StatusSuccess, core.WaitAll(st, 10*time.Second), st[0].Message())
	in, ok := b.PopInboundTransferStatus(a.Key(), 1)
	require.True(t, ok)
	require.Equal(t, core.StatusSuccess, in.Code)
	require.NoError(t, a.Notify(b.Key(), []byte("done")))
	notes := b.PopNotifications()
	require.Len(t, notes, 1)
	require.Equal(t, a.Key(), notes[0].From)

	_, err := engine.New(engine.Config{Key: long("c") + "x"})
	require.ErrorContains(t, err, "engine key of 513 bytes")
}

func dataPort(t *testing.T, e *engine.Engine) string {
	d := e.Desc()
	blob := d.Blob(core.BackendTCP)
	require.Len(t, blob, 2)
	return fmt.Sprintf("127.0.0.1:%d", binary.LittleEndian.Uint16(blob))
}

func TestHostileDataPortConnectionsDoNotDisturbEngines(t *testing.T) {
	a, b := pair(t, nil)
	const n = 1 << 16
	src, dst := alloc(t, n), alloc(t, n)
	for i := range src.Bytes() {
		src.Bytes()[i] = byte(i)
	}
	sd, dd := register(t, a, src), register(t, b, dst)

	// Connections that send garbage, a bogus hello, or nothing at all.
	for _, garbage := range [][]byte{
		[]byte("GET / HTTP/1.0\r\n\r\n"),
		append([]byte("MGH1\x07\x00mallory"), bytes.Repeat([]byte{0xff}, 600)...),
		nil,
	} {
		c, err := net.DialTimeout("tcp", dataPort(t, b), 10*time.Second)
		require.NoError(t, err)
		defer c.Close()
		require.NoError(t, c.SetDeadline(time.Now().Add(10*time.Second)))
		head := make([]byte, 4)
		_, err = io.ReadFull(c, head)
		require.NoError(t, err)
		require.Equal(t, "MGT1", string(head), "the data port greets with a challenge")
		if garbage != nil {
			c.Write(garbage)
		}
	}
	st := a.Submit(core.OpWrite, []engine.Request{{Local: sd, Remote: dd, Ranges: []core.Range{{Size: n}}, UID: 1}})
	require.Equal(t, core.StatusSuccess, core.WaitAll(st, 10*time.Second), st[0].Message())
	require.Equal(t, src.Bytes(), dst.Bytes())
}

func TestWaitAllReportsTheFailureOfABatch(t *testing.T) {
	a, b := pair(t, nil)
	src, dst := alloc(t, 1<<20), alloc(t, 1<<20)
	sd, dd := register(t, a, src), register(t, b, dst)
	bad := dd
	bad.ID = 4242
	reqs := []engine.Request{
		{Local: sd, Remote: dd, Ranges: []core.Range{{Size: 1 << 20}}, UID: 1},
		{Local: sd, Remote: bad, Ranges: []core.Range{{Size: 16}}, UID: 2},
		{Local: sd, Remote: dd, Ranges: []core.Range{{Size: 16}}, UID: 3},
	}
	st := a.Submit(core.OpWrite, reqs)
	require.Equal(t, core.ErrNotFound, core.WaitAll(st, 10*time.Second))
	require.Contains(t, st[1].Message(), "memory 4242 is not registered")
	for _, i := range []int{0, 2} {
		require.Equal(t, core.StatusSuccess, st[i].Wait(10*time.Second), st[i].Message())
	}
	in, ok := b.PopInboundTransferStatus(a.Key(), 2)
	require.True(t, ok)
	require.Equal(t, core.ErrNotFound, in.Code, "the target's status says why too")
}
