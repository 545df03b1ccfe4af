package tcp

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"io"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/mori-go/mori-go/core"
)

// Hostile peers against a real TCP backend on loopback. Each test checks
// that the guard memory around the registered region and the parts of the
// region nothing should reach are unchanged, and that a legitimate engine
// is served afterwards.

const regionSize = 64 << 10

func target(t *testing.T, secret []byte, mod func(*Config)) (*node, *guarded) {
	t.Helper()
	n := newNode(t, "target", secret, mod)
	g := newGuarded(t, n.reg, regionSize)
	g.fill(1)
	return n, g
}

func TestForgedMemoryIDIsRefusedAndTheStreamGoesOn(t *testing.T) {
	n, g := target(t, nil, nil)
	before := g.snapshot()
	p := handshake(t, n, "mallory")

	payload := bytes.Repeat([]byte{0xAB}, 16)
	p.write(request(reqWrite, memRef{id: 999}, 1, 1, 1, []core.Range{{RemoteOffset: 8, Size: 16}}, payload))
	h, msg, _ := p.response()
	require.Equal(t, respAck, h.Type)
	require.Equal(t, core.ErrNotFound, h.Code)
	require.Contains(t, msg, "memory 999 is not registered")

	p.write(request(reqRead, memRef{id: 999}, 2, 2, 1, []core.Range{{Size: 16}}, nil))
	h, msg, data := p.response()
	require.Equal(t, respData, h.Type)
	require.Equal(t, core.ErrNotFound, h.Code)
	require.Contains(t, msg, "memory 999 is not registered")
	require.Empty(t, data)
	require.Equal(t, before, g.mem(), "a refused request touches nothing")

	// The stream is still in step: a correct write and read on it work.
	p.write(request(reqWrite, ref(g.r), 3, 3, 1, []core.Range{{RemoteOffset: 8, Size: 16}}, payload))
	h, msg, _ = p.response()
	require.Equal(t, core.StatusSuccess, h.Code, msg)
	require.Equal(t, payload, g.mem()[8:24])
	require.Equal(t, before[:8], g.mem()[:8])
	require.Equal(t, before[24:], g.mem()[24:])
	p.write(request(reqRead, ref(g.r), 4, 4, 1, []core.Range{{RemoteOffset: 0, Size: 32}}, nil))
	h, _, data = p.response()
	require.Equal(t, core.StatusSuccess, h.Code)
	require.Equal(t, g.mem()[:32], data)

	in, ok := n.inbound.Pop(core.InboundKey{Peer: "mallory", UID: 1})
	require.True(t, ok)
	require.Equal(t, core.ErrNotFound, in.Code)
	require.Contains(t, in.Message, "memory 999")
	g.checkGuards(t)
	checkLegit(t, n, g)
}

func TestOutOfBoundsRangesAreRefusedAndNothingWritten(t *testing.T) {
	n, g := target(t, nil, nil)
	before := g.snapshot()
	p := handshake(t, n, "mallory")
	cases := []struct {
		name    string
		entries []core.Range
		want    string
	}{
		{"offset+size wraps 2^64", []core.Range{{RemoteOffset: ^uint64(0) - 7, Size: 16}}, "exceeds its 65536 bytes"},
		{"offset past the end", []core.Range{{RemoteOffset: 1 << 62, Size: 1}}, "exceeds"},
		{"ends one past the end", []core.Range{{RemoteOffset: regionSize - 15, Size: 16}}, "exceeds"},
		{"second entry bad", []core.Range{{RemoteOffset: 0, Size: 16}, {RemoteOffset: ^uint64(0), Size: 1}}, "entry 1: memory"},
		{"zero length", []core.Range{{RemoteOffset: 0, Size: 0}}, "zero-length range"},
		{"zero length among others", []core.Range{{RemoteOffset: 0, Size: 8}, {RemoteOffset: 8, Size: 0}, {RemoteOffset: 8, Size: 8}}, "entry 1: memory 1: zero-length"},
	}
	for i, c := range cases {
		uid := uint64(100 + i)
		var size uint64
		for _, e := range c.entries {
			size += e.Size
		}
		p.write(request(reqWrite, ref(g.r), uid, uid, 1, c.entries, bytes.Repeat([]byte{0xCD}, int(size))))
		h, msg, _ := p.response()
		require.Equal(t, core.ErrInvalidArgs, h.Code, c.name)
		require.Contains(t, msg, c.want, c.name)
		in, ok := n.inbound.Pop(core.InboundKey{Peer: "mallory", UID: uid})
		require.True(t, ok, c.name)
		require.Equal(t, core.ErrInvalidArgs, in.Code, c.name)

		p.write(request(reqRead, ref(g.r), uid+50, uid+50, 1, c.entries, nil))
		h, msg, data := p.response()
		require.Equal(t, core.ErrInvalidArgs, h.Code, c.name)
		require.Contains(t, msg, c.want, c.name)
		require.Empty(t, data)
	}
	require.Equal(t, before, g.mem(), "nothing was written")
	g.checkGuards(t)

	// A size past the frame limit breaks the protocol: the stream is cut
	// (it could not be skipped: its payload is not bounded).
	p.write(request(reqWrite, ref(g.r), 200, 200, 1, []core.Range{{RemoteOffset: 8, Size: ^uint64(0) - 7}}, nil))
	p.requireClosed()
	require.Equal(t, before, g.mem())
	g.checkGuards(t)
	checkLegit(t, n, g)
}

func TestZeroPartsAndPartCountMismatch(t *testing.T) {
	n, g := target(t, nil, nil)
	before := g.snapshot()
	p := handshake(t, n, "mallory")
	p.write(request(reqWrite, ref(g.r), 1, 1, 0, []core.Range{{Size: 4}}, []byte{1, 2, 3, 4}))
	h, msg, _ := p.response()
	require.Equal(t, core.ErrInvalidArgs, h.Code)
	require.Contains(t, msg, "declares zero parts")
	require.Equal(t, before, g.mem())

	p.write(request(reqWrite, ref(g.r), 2, 2, 2, []core.Range{{Size: 4}}, []byte{1, 2, 3, 4}))
	h, _, _ = p.response()
	require.Equal(t, core.StatusSuccess, h.Code)
	p.write(request(reqWrite, ref(g.r), 2, 2, 3, []core.Range{{RemoteOffset: 4, Size: 4}}, []byte{5, 6, 7, 8}))
	h, msg, _ = p.response()
	require.Equal(t, core.ErrInvalidArgs, h.Code)
	require.Contains(t, msg, "part declares 3 parts, earlier parts declared 2")
	require.Equal(t, before[4:], g.mem()[4:], "the refused part wrote nothing")
	g.checkGuards(t)
}

func TestGarbageInsteadOfHandshakeIsDropped(t *testing.T) {
	n, g := target(t, nil, nil)
	before := g.snapshot()
	for _, garbage := range [][]byte{
		[]byte("GET / HTTP/1.1\r\nHost: x\r\n\r\n"),
		bytes.Repeat([]byte{0xFF}, 4096),
		// A hello whose key length is past the limit.
		append([]byte(helloMagic), 0xFF, 0xFF),
		// A hello with an empty initiator key.
		append([]byte(helloMagic), 0, 0, 1, 0, 'x'),
		// A frame where the hello should be.
		request(reqWrite, ref(g.r), 1, 1, 1, []core.Range{{Size: 8}}, make([]byte, 8)),
	} {
		p := dialRaw(t, n.addr())
		p.write(garbage)
		p.requireClosed()
	}
	require.Equal(t, before, g.mem())
	g.checkGuards(t)
	checkLegit(t, n, g)
}

func TestSilentPeerIsCutOffAfterHandshakeTimeout(t *testing.T) {
	n, g := target(t, nil, func(c *Config) { c.HandshakeTimeout = 300 * time.Millisecond })
	p := dialRaw(t, n.addr())
	p.write([]byte("MG")) // half a hello, then nothing
	checkLegit(t, n, g)
	p.requireClosed()
}

func TestHalfFrameThenStallIsCutOff(t *testing.T) {
	const stall = 300 * time.Millisecond
	n, g := target(t, nil, func(c *Config) { c.StallTimeout = stall })
	start := g.snapshot()

	// Half a header.
	p1 := handshake(t, n, "staller")
	p1.write(request(reqWrite, ref(g.r), 1, 1, 1, []core.Range{{Size: 64}}, nil)[:20])
	// A full header and entries, and part of the payload: the bytes the
	// region already holds there (the target lands them whenever its
	// goroutine gets to them, which must not disturb checkLegit's check of
	// the whole region below).
	p2 := handshake(t, n, "staller")
	p2.write(request(reqWrite, ref(g.r), 2, 2, 1, []core.Range{{RemoteOffset: 1024, Size: 4096}}, start[1024:1124]))
	// A header and half the entries.
	p3 := handshake(t, n, "staller")
	p3.write(request(reqRead, ref(g.r), 3, 3, 1, []core.Range{{Size: 16}, {RemoteOffset: 16, Size: 16}}, nil)[:reqHeaderLen+20])

	// Others are served meanwhile (checkLegit writes the middle half of
	// the region and checks it).
	checkLegit(t, n, g)
	p1.requireClosed()
	p2.requireClosed()
	p3.requireClosed()

	// The stalled write failed on the target, and wrote nothing but its
	// own bytes where they belong (outside the middle half checkLegit
	// wrote, the region is as it started).
	in, ok := n.inbound.Pop(core.InboundKey{Peer: "staller", UID: 2})
	require.True(t, ok)
	require.True(t, in.Code.Failed(), "%+v", in)
	mem := g.mem()
	require.Equal(t, start[:regionSize/4], mem[:regionSize/4])
	require.Equal(t, start[3*regionSize/4:], mem[3*regionSize/4:])
	g.checkGuards(t)

	// An idle stream between frames is not a stall: it is kept.
	p4 := handshake(t, n, "idle")
	time.Sleep(3 * stall)
	p4.write(request(reqRead, ref(g.r), 4, 4, 1, []core.Range{{Size: 16}}, nil))
	h, _, data := p4.response()
	require.Equal(t, core.StatusSuccess, h.Code)
	require.Equal(t, g.mem()[:16], data)
	checkLegit(t, n, g)
}

func TestHugeLengthPrefixesDropTheConnectionAtOnce(t *testing.T) {
	// A stall timeout far longer than the test's read deadline: if the
	// server waited for the announced bytes, requireClosed would fail.
	n, g := target(t, nil, func(c *Config) { c.StallTimeout = time.Hour })
	before := g.snapshot()
	hdr := func(h reqHeader) []byte {
		b := make([]byte, reqHeaderLen)
		h.put(b)
		return b
	}
	bigEntries := func(sizes ...uint64) []byte {
		var total uint64
		for _, s := range sizes {
			total += s
		}
		b := hdr(reqHeader{Type: reqWrite, MemID: g.r.ID, UID: 9, Parts: 1, Entries: uint32(len(sizes)), Payload: min(total, maxPayload)})
		for i, s := range sizes {
			b = append(b, make([]byte, entryLen)...)
			putEntry(b[reqHeaderLen+i*entryLen:], 0, s)
		}
		return b
	}
	cases := map[string][]byte{
		"entries 2^32-1":     hdr(reqHeader{Type: reqWrite, MemID: g.r.ID, Parts: 1, Entries: ^uint32(0), Payload: 16}),
		"entries over limit": hdr(reqHeader{Type: reqRead, MemID: g.r.ID, Parts: 1, Entries: maxEntries + 1}),
		"no entries":         hdr(reqHeader{Type: reqRead, MemID: g.r.ID, Parts: 1, Entries: 0}),
		"payload 2^63":       hdr(reqHeader{Type: reqWrite, MemID: g.r.ID, Parts: 1, Entries: 1, Payload: 1 << 63}),
		"payload over limit": hdr(reqHeader{Type: reqWrite, MemID: g.r.ID, Parts: 1, Entries: 1, Payload: maxPayload + 1}),
		"read with payload":  hdr(reqHeader{Type: reqRead, MemID: g.r.ID, Parts: 1, Entries: 1, Payload: 8}),
		"unknown type":       hdr(reqHeader{Type: 7, MemID: g.r.ID, Parts: 1, Entries: 1}),
		"bad magic":          append([]byte{0, 0}, hdr(reqHeader{Type: reqWrite, Entries: 1})[2:]...),
		"entry over limit":   bigEntries(maxPayload + 1),
		"entries sum over":   bigEntries(maxPayload/2+1, maxPayload/2+1),
		"sizes disagree":     bigEntries(8, 8)[:reqHeaderLen+2*entryLen],
	}
	// "sizes disagree": header says 16 bytes of payload; make it say 17.
	b := cases["sizes disagree"]
	binary.LittleEndian.PutUint64(b[32:], 17)
	for name, frame := range cases {
		t.Run(name, func(t *testing.T) {
			p := handshake(t, n, "mallory")
			p.write(frame)
			p.requireClosed()
		})
	}
	require.Equal(t, before, g.mem())
	g.checkGuards(t)
	checkLegit(t, n, g)
}

func TestWrongTargetKeyIsRefused(t *testing.T) {
	n, g := target(t, nil, nil)
	p := dialRaw(t, n.addr())
	require.Equal(t, "target", p.ch.Key)
	p.hello("mallory", "someone-else", [macLen]byte{})
	err := readVerdict(p.br)
	require.ErrorContains(t, err, `peer refused the connection: this is engine "target", not "someone-else"`)
	require.Equal(t, core.ErrNotFound, core.CodeOf(err))
	p.requireClosed()

	// Through the backend: a descriptor naming the wrong key is refused on
	// the initiator's side, from the challenge.
	ini := newNode(t, "ini", nil, nil)
	d := n.desc()
	d.Key = "impostor"
	err = ini.b.AddPeer(d)
	require.ErrorContains(t, err, `is engine "target", not "impostor"`)
	checkLegit(t, n, g)
}

func TestSharedSecretRefusesBadMACsBeforeTouchingMemory(t *testing.T) {
	secret := []byte("s3cret")
	n, g := target(t, secret, nil)
	before := g.snapshot()
	frame := request(reqWrite, ref(g.r), 1, 1, 1, []core.Range{{Size: 64}}, bytes.Repeat([]byte{0x77}, 64))
	var otherNonce [nonceLen]byte
	cases := map[string]func(ch challenge) [macLen]byte{
		"missing MAC":    func(challenge) [macLen]byte { return [macLen]byte{} },
		"wrong secret":   func(ch challenge) [macLen]byte { return helloMAC([]byte("guess"), ch.Nonce, "mallory", "target") },
		"replayed nonce": func(challenge) [macLen]byte { return helloMAC(secret, otherNonce, "mallory", "target") },
		"other identity": func(ch challenge) [macLen]byte { return helloMAC(secret, ch.Nonce, "alice", "target") },
		"other target":   func(ch challenge) [macLen]byte { return helloMAC(secret, ch.Nonce, "mallory", "target2") },
	}
	for name, mac := range cases {
		t.Run(name, func(t *testing.T) {
			p := dialRaw(t, n.addr())
			p.hello("mallory", "target", mac(p.ch))
			// A frame right behind the hello, as a hostile peer would send.
			p.write(frame)
			err := readVerdict(p.br)
			require.ErrorContains(t, err, "authentication failed: wrong or missing shared secret")
			require.Equal(t, core.ErrInvalidArgs, core.CodeOf(err))
			p.requireClosed()
			require.Equal(t, before, g.mem(), "nothing written before authentication")
		})
	}
	_, ok := n.inbound.Pop(core.InboundKey{Peer: "mallory", UID: 1})
	require.False(t, ok, "no frame was even looked at")

	// A backend with the wrong secret or none is refused too.
	for _, s := range [][]byte{[]byte("wrong"), nil} {
		ini := newNode(t, "ini", s, nil)
		err := ini.b.AddPeer(n.desc())
		require.ErrorContains(t, err, "authentication failed")
	}
	g.checkGuards(t)
	checkLegit(t, n, g)
}

func TestMACOfferedToATargetWithoutSecret(t *testing.T) {
	n, g := target(t, nil, nil)
	p := dialRaw(t, n.addr())
	p.hello("alice", "target", helloMAC([]byte("s"), p.ch.Nonce, "alice", "target"))
	require.ErrorContains(t, readVerdict(p.br), "authentication offered but this engine has no secret")
	p.requireClosed()
	checkLegit(t, n, g)
}

func TestDuplicateUIDFromAnotherInstanceIsRefused(t *testing.T) {
	n, g := target(t, nil, nil)
	before := g.snapshot()
	p1 := handshake(t, n, "peer")
	p2 := handshake(t, n, "peer")
	part := func(off uint64, fill byte) []byte {
		return request(reqWrite, ref(g.r), 5, 1, 2, []core.Range{{RemoteOffset: off, Size: 8}}, bytes.Repeat([]byte{fill}, 8))
	}
	p1.write(part(0, 0x11))
	h, msg, _ := p1.response()
	require.Equal(t, core.StatusSuccess, h.Code, msg)

	// Another run (instance 2) of uid 5 while the first is in progress.
	p2.write(request(reqWrite, ref(g.r), 5, 2, 1, []core.Range{{RemoteOffset: 100, Size: 8}}, bytes.Repeat([]byte{0x22}, 8)))
	h, msg, _ = p2.response()
	require.Equal(t, core.ErrInvalidArgs, h.Code)
	require.Contains(t, msg, `duplicate transfer uid 5 from "peer"`)
	require.Equal(t, before[100:108], g.mem()[100:108], "the duplicate wrote nothing")

	p1.write(part(8, 0x12))
	h, _, _ = p1.response()
	require.Equal(t, core.StatusSuccess, h.Code)
	in, ok := n.inbound.Pop(core.InboundKey{Peer: "peer", UID: 5})
	require.True(t, ok)
	require.Equal(t, core.StatusSuccess, in.Code, in.Message)
	require.Equal(t, append(bytes.Repeat([]byte{0x11}, 8), bytes.Repeat([]byte{0x12}, 8)...), g.mem()[:16])
	require.Equal(t, before[16:], g.mem()[16:])

	// Once popped, a new run of the uid is welcome.
	p2.write(request(reqWrite, ref(g.r), 5, 2, 1, []core.Range{{RemoteOffset: 100, Size: 8}}, bytes.Repeat([]byte{0x22}, 8)))
	h, _, _ = p2.response()
	require.Equal(t, core.StatusSuccess, h.Code)
	g.checkGuards(t)
	checkLegit(t, n, g)
}

func TestPeerThatStopsReadingCannotPinMemory(t *testing.T) {
	// A read whose response the peer never reads holds a use of the
	// region while the server writes. The stall timeout must cut the
	// stream, or deregistering the region would wait for ever.
	n := newNode(t, "target", nil, func(c *Config) { c.StallTimeout = 300 * time.Millisecond })
	const big = 64 << 20
	g := newGuarded(t, n.reg, big)
	p := handshake(t, n, "sloth")
	if tc, ok := p.c.(*net.TCPConn); ok {
		require.NoError(t, tc.SetReadBuffer(16<<10))
	}
	p.write(request(reqRead, ref(g.r), 1, 1, 1, []core.Range{{Size: big}}, nil))
	// Read the header, so the server is known to be inside the response.
	var hb [respHeaderLen]byte
	_, err := io.ReadFull(p.br, hb[:])
	require.NoError(t, err)
	h, err := parseRespHeader(hb[:])
	require.NoError(t, err)
	require.Equal(t, core.StatusSuccess, h.Code)
	require.Equal(t, uint64(big), h.Payload)

	removed := make(chan error, 1)
	go func() {
		_, err := n.reg.Remove(g.r.ID)
		removed <- err
	}()
	select {
	case err := <-removed:
		require.NoError(t, err)
	case <-time.After(ioDeadline):
		t.Fatal("deregistration blocked by a peer that does not read")
	}
	p.requireClosed()
}

func TestTooManyConnectionsAreRefused(t *testing.T) {
	n, g := target(t, nil, func(c *Config) { c.MaxConns = 2 })
	p1 := handshake(t, n, "a")
	_ = handshake(t, n, "b")
	c, err := net.DialTimeout("tcp", n.addr(), ioDeadline)
	require.NoError(t, err)
	defer c.Close()
	require.NoError(t, c.SetDeadline(time.Now().Add(ioDeadline)))
	_, err = readChallenge(bufio.NewReader(c))
	require.Error(t, err, "a third stream gets no challenge")
	p1.write(request(reqRead, ref(g.r), 1, 1, 1, []core.Range{{Size: 8}}, nil))
	h, _, _ := p1.response()
	require.Equal(t, core.StatusSuccess, h.Code)
}

// A hostile or broken target must not crash or confuse the initiator.

// fakeTarget accepts one stream, completes the handshake as key, then runs
// serve on it.
func fakeTarget(t *testing.T, key string, serve func(c net.Conn, br *bufio.Reader)) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				c.SetDeadline(time.Now().Add(ioDeadline))
				ch, _ := newChallenge(key)
				if _, err := c.Write(ch.encode()); err != nil {
					return
				}
				br := bufio.NewReader(c)
				if _, err := readHello(br); err != nil {
					return
				}
				if _, err := c.Write(encodeVerdict(core.StatusSuccess, "")); err != nil {
					return
				}
				serve(c, br)
			}()
		}
	}()
	return ln.Addr().String()
}

// readRequest reads one request frame with its payload.
func readRequest(br *bufio.Reader) (reqHeader, error) {
	var hb [reqHeaderLen]byte
	if _, err := io.ReadFull(br, hb[:]); err != nil {
		return reqHeader{}, err
	}
	h, err := parseReqHeader(hb[:])
	if err != nil {
		return h, err
	}
	_, err = io.CopyN(io.Discard, br, int64(h.Entries)*entryLen+int64(h.Payload))
	return h, err
}

func addFake(t *testing.T, ini *node, key, addr string) {
	t.Helper()
	_, port, err := net.SplitHostPort(addr)
	require.NoError(t, err)
	var p uint16
	for _, c := range port {
		p = p*10 + uint16(c-'0')
	}
	require.NoError(t, ini.b.AddPeer(core.EngineDesc{Key: key, Host: "127.0.0.1", Backends: []core.BackendBlob{{Type: core.BackendTCP, Data: binary.LittleEndian.AppendUint16(nil, p)}}}))
}

func TestInitiatorSurvivesHostileResponses(t *testing.T) {
	long := strings.Repeat("x", maxMessageLen) // past any buffer sized for usual messages
	cases := []struct {
		name  string
		reply func() []byte
		want  string
		code  core.StatusCode
	}{
		{"long error message", func() []byte {
			b := make([]byte, respHeaderLen)
			(&respHeader{Type: respAck, Code: core.ErrInvalidArgs, MsgLen: uint32(len(long))}).put(b)
			return append(b, long...)
		}, long, core.ErrInvalidArgs},
		{"message over limit", func() []byte {
			b := make([]byte, respHeaderLen)
			(&respHeader{Type: respAck, Code: core.ErrInvalidArgs, MsgLen: maxMessageLen + 1}).put(b)
			return b
		}, "bad response", core.ErrConnection},
		{"not a success or failure code", func() []byte {
			b := make([]byte, respHeaderLen)
			(&respHeader{Type: respAck, Code: core.StatusInProgress}).put(b)
			return b
		}, "bad response", core.ErrConnection},
		{"data for a write", func() []byte {
			b := make([]byte, respHeaderLen)
			(&respHeader{Type: respData, Code: core.StatusSuccess, Payload: 8}).put(b)
			return append(b, make([]byte, 8)...)
		}, "out of step", core.ErrConnection},
		{"ack with payload", func() []byte {
			b := make([]byte, respHeaderLen)
			(&respHeader{Type: respAck, Code: core.StatusSuccess, Payload: 8}).put(b)
			return b
		}, "out of step", core.ErrConnection},
		{"garbage", func() []byte { return bytes.Repeat([]byte{0xFF}, 64) }, "bad response", core.ErrConnection},
		{"hang up", func() []byte { return nil }, "peer closed the connection", core.ErrConnection},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			addr := fakeTarget(t, "fake", func(conn net.Conn, br *bufio.Reader) {
				if _, err := readRequest(br); err == nil {
					conn.Write(c.reply())
				}
			})
			ini := newNode(t, "ini", nil, func(cfg *Config) { cfg.Streams = 1 })
			src := newGuarded(t, ini.reg, 4096)
			addFake(t, ini, "fake", addr)
			st := ini.transfer(t, core.OpWrite, 1, src.r, "fake", src.r, []core.Range{{Size: 64}})
			require.Equal(t, c.code, st.Code(), st.Message())
			require.Contains(t, st.Message(), c.want)
			src.checkGuards(t)
		})
	}
}

func TestInitiatorSurvivesUnsolicitedResponse(t *testing.T) {
	addr := fakeTarget(t, "fake", func(conn net.Conn, br *bufio.Reader) {
		b := make([]byte, respHeaderLen)
		(&respHeader{Type: respAck, Code: core.StatusSuccess}).put(b)
		conn.Write(b)
		io.Copy(io.Discard, br)
	})
	ini := newNode(t, "ini", nil, func(cfg *Config) { cfg.Streams = 1 })
	src := newGuarded(t, ini.reg, 4096)
	addFake(t, ini, "fake", addr)
	// The stream breaks on the unsolicited response; a transfer then
	// either fails cleanly or succeeds on a redialed stream (which gets the
	// same treatment): it must end, one way or the other, without a crash.
	st := ini.transfer(t, core.OpWrite, 1, src.r, "fake", src.r, []core.Range{{Size: 64}})
	require.True(t, st.Code().Terminal())
}

func TestInitiatorReadIntoGuardedMemory(t *testing.T) {
	// A target that answers a read with the right amount of data: it lands
	// exactly in the local ranges, never around them.
	addr := fakeTarget(t, "fake", func(conn net.Conn, br *bufio.Reader) {
		for {
			h, err := readRequest(br)
			if err != nil {
				return
			}
			b := make([]byte, respHeaderLen)
			// The entries were discarded; every test read asks 100 bytes.
			(&respHeader{Type: respData, Code: core.StatusSuccess, Payload: 100}).put(b)
			_ = h
			conn.Write(append(b, bytes.Repeat([]byte{0x99}, 100)...))
		}
	})
	ini := newNode(t, "ini", nil, func(cfg *Config) { cfg.Streams = 1 })
	dst := newGuarded(t, ini.reg, 4096)
	addFake(t, ini, "fake", addr)
	st := ini.transfer(t, core.OpRead, 1, dst.r, "fake", dst.r, []core.Range{{LocalOffset: 4096 - 50, Size: 50}, {LocalOffset: 0, RemoteOffset: 1000, Size: 50}})
	require.Equal(t, core.StatusSuccess, st.Code(), st.Message())
	require.Equal(t, bytes.Repeat([]byte{0x99}, 50), dst.mem()[4096-50:])
	require.Equal(t, bytes.Repeat([]byte{0x99}, 50), dst.mem()[:50])
	require.Equal(t, make([]byte, 4096-100), dst.mem()[50:4096-50])
	dst.checkGuards(t)
}
