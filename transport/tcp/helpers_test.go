package tcp

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/mori-go/mori-go/core"
	"github.com/mori-go/mori-go/internal/hostmem"
)

// ioDeadline bounds every blocking read or write of a test, so that a bug
// fails the test instead of hanging CI.
const ioDeadline = 10 * time.Second

// testLogger discards logs unless MORI_TEST_LOG is set.
func testLogger() *slog.Logger {
	if os.Getenv("MORI_TEST_LOG") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.DiscardHandler)
}

// guarded is a registered region with guard memory on both sides, all in
// one mapping: [guard | region | guard]. The guards are filled with a
// pattern that must never change.
type guarded struct {
	buf   *hostmem.Buffer
	guard int
	size  int
	r     *core.Region
}

const guardByte = 0xEE

func newGuarded(t testing.TB, reg *core.Registry, size int) *guarded {
	t.Helper()
	return newGuardedWith(t, reg, size, core.RegionOptions{})
}

// newGuardedWith is newGuarded with registration options.
func newGuardedWith(t testing.TB, reg *core.Registry, size int, opts core.RegionOptions) *guarded {
	t.Helper()
	guard := 4096
	buf, err := hostmem.Alloc(guard + size + guard)
	require.NoError(t, err)
	t.Cleanup(func() { buf.Free() })
	g := &guarded{buf: buf, guard: guard, size: size}
	b := buf.Bytes()
	for i := range b[:guard] {
		b[i] = guardByte
	}
	for i := range b[guard+size:] {
		b[guard+size+i] = guardByte
	}
	g.r, err = reg.AddWith(buf.Addr()+uintptr(guard), uint64(size), core.LocationCPU, -1, true, opts)
	require.NoError(t, err)
	return g
}

// mem returns the registered bytes.
func (g *guarded) mem() []byte { return g.buf.Bytes()[g.guard : g.guard+g.size] }

// fill sets the registered bytes to a pattern derived from seed.
func (g *guarded) fill(seed byte) {
	for i, m := 0, g.mem(); i < len(m); i++ {
		m[i] = seed + byte(i*7)
	}
}

// snapshot copies the registered bytes.
func (g *guarded) snapshot() []byte { return append([]byte(nil), g.mem()...) }

// checkGuards fails the test if a guard byte changed.
func (g *guarded) checkGuards(t testing.TB) {
	t.Helper()
	b := g.buf.Bytes()
	for _, part := range [][]byte{b[:g.guard], b[g.guard+g.size:]} {
		if bytes.Count(part, []byte{guardByte}) != len(part) {
			t.Fatalf("guard memory outside the registered region changed")
		}
	}
}

// node is one TCP backend with its registry and inbound table: the target
// (or initiator) side of an engine, without the control plane.
type node struct {
	key     string
	reg     *core.Registry
	inbound *core.InboundTable
	b       *Backend
	secret  []byte
}

func newNode(t testing.TB, key string, secret []byte, mod func(*Config)) *node {
	t.Helper()
	cfg := Config{DialTimeout: ioDeadline, HandshakeTimeout: ioDeadline, StallTimeout: ioDeadline}
	if mod != nil {
		mod(&cfg)
	}
	n := &node{key: key, reg: core.NewRegistry(), inbound: core.NewInboundTable(1024), secret: secret}
	b, err := New(cfg, core.BackendEnv{
		LocalKey: key,
		Host:     "127.0.0.1",
		Registry: n.reg,
		Inbound:  n.inbound,
		Secret:   secret,
		Logger:   testLogger(),
	})
	require.NoError(t, err)
	t.Cleanup(func() { b.Close() })
	n.b = b
	return n
}

func (n *node) addr() string { return "127.0.0.1:" + strconv.Itoa(int(n.b.Port())) }

func (n *node) desc() core.EngineDesc {
	return core.EngineDesc{Key: n.key, Host: "127.0.0.1", Backends: []core.BackendBlob{{Type: core.BackendTCP, Data: n.b.Blob()}}}
}

// transfer runs one transfer from n to the target memory and waits for it.
func (n *node) transfer(t testing.TB, op core.Op, uid uint64, local *core.Region, target string, remote *core.Region, ranges []core.Range) *core.Status {
	t.Helper()
	st := n.start(op, uid, local, target, remote, ranges, 0)
	require.True(t, st.Wait(ioDeadline).Terminal(), "transfer did not end")
	return st
}

// start submits a transfer to the target memory (with the element size
// elem, 0 for the local region's) and returns its status at once.
func (n *node) start(op core.Op, uid uint64, local *core.Region, target string, remote *core.Region, ranges []core.Range, elem int) *core.Status {
	st := core.NewStatus()
	n.b.Submit(&core.Transfer{
		Op: op, UID: uid, Instance: uid, Peer: target, Local: local, Status: st, Ranges: ranges, ElemSize: elem,
		Remote: core.MemoryDesc{EngineKey: target, ID: remote.ID, Token: remote.Token(), Location: core.LocationCPU, Size: remote.Size},
	})
	return st
}

// checkLegit proves that target still serves: a fresh initiator engine
// writes a pattern into the target region and reads it back.
func checkLegit(t testing.TB, target *node, g *guarded) {
	t.Helper()
	var secret []byte
	if target.secret != nil {
		secret = target.secret
	}
	ini := newNode(t, fmt.Sprintf("legit-%d", time.Now().UnixNano()), secret, nil)
	require.NoError(t, ini.b.AddPeer(target.desc()))
	src := newGuarded(t, ini.reg, g.size)
	src.fill(byte(time.Now().UnixNano()))
	before := g.snapshot()
	off, size := uint64(g.size/4), uint64(g.size/2)
	uid := uint64(time.Now().UnixNano())
	st := ini.transfer(t, core.OpWrite, uid, src.r, target.key, g.r, []core.Range{{LocalOffset: off, RemoteOffset: off, Size: size}})
	require.Equal(t, core.StatusSuccess, st.Code(), st.Message())
	want := append(append(append([]byte(nil), before[:off]...), src.mem()[off:off+size]...), before[off+size:]...)
	require.Equal(t, want, g.mem(), "the write changed exactly its range")
	back := newGuarded(t, ini.reg, g.size)
	st = ini.transfer(t, core.OpRead, uid+1, back.r, target.key, g.r, []core.Range{{Size: uint64(g.size)}})
	require.Equal(t, core.StatusSuccess, st.Code(), st.Message())
	require.Equal(t, g.mem(), back.mem())
	g.checkGuards(t)
	src.checkGuards(t)
	back.checkGuards(t)
	in, ok := target.inbound.Pop(core.InboundKey{Peer: ini.key, UID: uid})
	require.True(t, ok)
	require.Equal(t, core.StatusSuccess, in.Code)
}

// rawPeer speaks the protocol by hand over one connection.
type rawPeer struct {
	t  testing.TB
	c  net.Conn
	br *bufio.Reader
	ch challenge
}

// dialRaw connects and reads the challenge.
func dialRaw(t testing.TB, addr string) *rawPeer {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, ioDeadline)
	require.NoError(t, err)
	t.Cleanup(func() { c.Close() })
	require.NoError(t, c.SetDeadline(time.Now().Add(ioDeadline)))
	p := &rawPeer{t: t, c: c, br: bufio.NewReader(c)}
	p.ch, err = readChallenge(p.br)
	require.NoError(t, err)
	return p
}

// handshake dials and completes the handshake as engine from.
func handshake(t testing.TB, target *node, from string) *rawPeer {
	t.Helper()
	p := dialRaw(t, target.addr())
	p.hello(from, target.key, helloMAC(target.secret, p.ch.Nonce, from, target.key))
	require.NoError(t, readVerdict(p.br))
	return p
}

func (p *rawPeer) hello(from, to string, mac [macLen]byte) {
	p.t.Helper()
	h := hello{From: from, To: to, MAC: mac}
	p.write(h.encode())
}

func (p *rawPeer) write(b []byte) {
	p.t.Helper()
	_, err := p.c.Write(b)
	require.NoError(p.t, err)
}

// memRef is what a request names: a memory id and the token presented.
type memRef struct {
	id  uint32
	tok core.Token
}

// ref names r with its own token, as its descriptor's holder would.
func ref(r *core.Region) memRef { return memRef{id: r.ID, tok: r.Token()} }

// request encodes a request frame with its entries and payload.
func request(typ uint8, mem memRef, uid, instance uint64, parts uint32, entries []core.Range, payload []byte) []byte {
	var size uint64
	for _, e := range entries {
		size += e.Size
	}
	h := reqHeader{Type: typ, MemID: mem.id, Token: mem.tok, UID: uid, Instance: instance, Parts: parts, Entries: uint32(len(entries))}
	if typ == reqWrite {
		h.Payload = size
	}
	b := make([]byte, reqHeaderLen+entryLen*len(entries))
	h.put(b)
	for i, e := range entries {
		putEntry(b[reqHeaderLen+i*entryLen:], e.RemoteOffset, e.Size)
	}
	return append(b, payload...)
}

// response reads one response: its header, message and payload.
func (p *rawPeer) response() (respHeader, string, []byte) {
	p.t.Helper()
	var hb [respHeaderLen]byte
	_, err := io.ReadFull(p.br, hb[:])
	require.NoError(p.t, err)
	h, err := parseRespHeader(hb[:])
	require.NoError(p.t, err)
	msg := make([]byte, h.MsgLen)
	_, err = io.ReadFull(p.br, msg)
	require.NoError(p.t, err)
	data := make([]byte, h.Payload)
	_, err = io.ReadFull(p.br, data)
	require.NoError(p.t, err)
	return h, string(msg), data
}

// requireClosed waits (bounded) for the server to close the connection,
// discarding whatever it still sends.
func (p *rawPeer) requireClosed() {
	p.t.Helper()
	require.NoError(p.t, p.c.SetReadDeadline(time.Now().Add(ioDeadline)))
	_, err := io.Copy(io.Discard, p.br)
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		p.t.Fatalf("the server did not close the connection within %s", ioDeadline)
	}
	// EOF (nil from io.Copy) or a reset both mean closed.
}

// holdFirstLanding holds the target's serving goroutine just before it
// lands its first write, as a scheduler that left it behind would: held is
// closed once it waits there, release lets it go on (once). The test's
// cleanup releases it too and closes the target, which waits for the
// goroutine: call this after allocating the memory it may land in, so that
// the cleanup runs before that memory is freed.
func holdFirstLanding(t testing.TB, target *node) (held <-chan struct{}, release func()) {
	h, r := make(chan struct{}), make(chan struct{})
	var once, released sync.Once
	hook := func() {
		once.Do(func() {
			close(h)
			<-r
		})
	}
	target.b.srv.beforeLand.Store(&hook)
	release = func() { released.Do(func() { close(r) }) }
	t.Cleanup(func() {
		release()
		target.b.Close()
	})
	return h, release
}
