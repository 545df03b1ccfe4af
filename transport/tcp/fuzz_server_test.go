package tcp

import (
	"bytes"
	"io"
	"net"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/mori-go/mori-go/core"
)

// FuzzServerFrames drives a real server with arbitrary bytes after a valid
// handshake. Whatever the input, the server must not crash, must not write
// outside the registered region (guard memory on both sides), must close
// or answer the stream promptly once the input ends, and must go on
// serving another stream. And the token check: an input that does not
// hold the region's token (drawn afresh each run, so only the seeds built
// here and their mutations hold it) must leave the region untouched.
func FuzzServerFrames(f *testing.F) {
	n := newNode(f, "target", nil, func(c *Config) { c.StallTimeout = 2 * time.Second })
	const size = 8192
	g := newGuarded(f, n.reg, size)
	mem := ref(g.r)
	cat := func(frames ...[]byte) []byte { return bytes.Join(frames, nil) }
	w := func(uid uint64, rs []core.Range) []byte {
		var total uint64
		for _, r := range rs {
			total += r.Size
		}
		return request(reqWrite, mem, uid, uid, 1, rs, bytes.Repeat([]byte{byte(uid)}, int(total)))
	}
	r := func(uid uint64, rs []core.Range) []byte { return request(reqRead, mem, uid, uid, 1, rs, nil) }
	f.Add([]byte{})
	f.Add(w(1, []core.Range{{RemoteOffset: 0, Size: 16}}))
	f.Add(cat(w(2, []core.Range{{RemoteOffset: 100, Size: 8}, {RemoteOffset: 4000, Size: 100}}), r(3, []core.Range{{Size: size}})))
	f.Add(request(reqWrite, memRef{id: 999}, 4, 4, 1, []core.Range{{Size: 8}}, make([]byte, 8)))
	f.Add(w(5, []core.Range{{RemoteOffset: ^uint64(0) - 3, Size: 8}}))
	f.Add(w(6, []core.Range{{RemoteOffset: size - 4, Size: 8}}))
	f.Add(w(7, []core.Range{{RemoteOffset: 8, Size: 0}}))
	f.Add(w(8, []core.Range{{Size: 64}})[:reqHeaderLen+entryLen+10])
	f.Add(request(reqRead, mem, 9, 9, 1, []core.Range{{Size: 8}}, nil)[:30])
	f.Add(cat(r(10, []core.Range{{Size: 1}}), r(11, []core.Range{{RemoteOffset: size - 1, Size: 1}}), w(12, []core.Range{{RemoteOffset: size - 1, Size: 1}})))
	f.Add(request(reqWrite, mem, 13, 13, 0, []core.Range{{Size: 8}}, make([]byte, 8)))
	f.Add(request(reqWrite, mem, 14, 14, 2, []core.Range{{Size: 8}}, make([]byte, 8)))
	forged := memRef{id: mem.id}
	f.Add(request(reqWrite, forged, 15, 15, 1, []core.Range{{Size: 64}}, bytes.Repeat([]byte{0x66}, 64)))
	f.Add(cat(request(reqRead, forged, 16, 16, 1, []core.Range{{Size: size}}, nil), w(17, []core.Range{{Size: 8}})))

	// A stream kept across inputs, to check that the server still serves.
	health := handshake(f, n, "health")
	var healthUID uint64

	f.Fuzz(func(t *testing.T, in []byte) {
		before := g.snapshot()
		p := handshake(t, n, "fuzzer")
		done := make(chan error, 1)
		go func() {
			p.c.SetReadDeadline(time.Now().Add(ioDeadline))
			_, err := io.Copy(io.Discard, p.br)
			done <- err
		}()
		p.c.Write(in) // the server may close early: errors are expected
		p.c.(*net.TCPConn).CloseWrite()
		err := <-done
		if ne, ok := err.(net.Error); ok && ne.Timeout() {
			t.Fatalf("the server neither answered nor closed within %s", ioDeadline)
		}
		p.c.Close()
		g.checkGuards(t)
		if tok := g.r.Token(); !bytes.Contains(in, tok[:]) {
			require.Equal(t, before, g.mem(), "a frame without the token changed the memory")
		}

		// The server still serves: a read on another stream returns the
		// region as it is now.
		health.t = t
		require.NoError(t, health.c.SetDeadline(time.Now().Add(ioDeadline)))
		// A fresh uid each time: for a read, the target records completion
		// after sending the data, so the entry may still be in progress.
		healthUID++
		health.write(request(reqRead, mem, healthUID, healthUID, 1, []core.Range{{Size: size}}, nil))
		h, msg, data := health.response()
		require.Equal(t, core.StatusSuccess, h.Code, msg)
		require.Equal(t, g.mem(), data)
	})
}
