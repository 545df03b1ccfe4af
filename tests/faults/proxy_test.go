package faults

import (
	"bytes"
	"encoding/binary"
	"net"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/mori-go/mori-go/core"
)

// proxy relays TCP connections to a data port on loopback, and can record
// what initiators send, delay what targets answer, hold connections and
// drop them all at once.
type proxy struct {
	t      testing.TB
	ln     net.Listener
	target string
	delay  atomic.Int64 // nanoseconds added to target -> initiator bytes
	// Connections accepted from holdFrom on stop forwarding initiator
	// bytes while hold is set.
	hold     atomic.Bool
	holdFrom int
	// budget, when at least 0, is how many more initiator bytes are
	// forwarded (all connections together); past it they are held.
	budget atomic.Int64

	mu     sync.Mutex
	conns  []*pconn
	closed bool
	wg     sync.WaitGroup
}

type pconn struct {
	idx            int
	client, server net.Conn
	mu             sync.Mutex
	sent           bytes.Buffer // what the initiator sent, in order
	dropped        bool
}

func newProxy(t testing.TB, target string) *proxy {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	p := &proxy{t: t, ln: ln, target: target, holdFrom: 1 << 30}
	p.budget.Store(-1)
	p.wg.Add(1)
	go p.accept()
	t.Cleanup(p.close)
	return p
}

func (p *proxy) port() uint16 { return uint16(p.ln.Addr().(*net.TCPAddr).Port) }

func (p *proxy) accept() {
	defer p.wg.Done()
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		s, err := net.DialTimeout("tcp", p.target, 5*time.Second)
		if err != nil {
			c.Close()
			continue
		}
		p.mu.Lock()
		if p.closed {
			p.mu.Unlock()
			c.Close()
			s.Close()
			return
		}
		pc := &pconn{idx: len(p.conns), client: c, server: s}
		p.conns = append(p.conns, pc)
		p.wg.Add(2)
		p.mu.Unlock()
		go p.up(pc)
		go p.down(pc)
	}
}

// up relays initiator -> target, recording it.
func (p *proxy) up(pc *pconn) {
	defer p.wg.Done()
	defer pc.server.Close()
	buf := make([]byte, 64<<10)
	for {
		n, err := pc.client.Read(buf)
		// Held bytes wait here, read but not forwarded.
		for p.hold.Load() && pc.idx >= p.holdFrom {
			if p.isClosed() || p.isDropped(pc) {
				return
			}
			time.Sleep(2 * time.Millisecond)
		}
		if b := p.budget.Load(); b >= 0 {
			fwd := min(int64(n), b)
			p.budget.Add(-fwd)
			if fwd < int64(n) {
				pc.server.Write(buf[:fwd])
				for !p.isClosed() && !p.isDropped(pc) {
					time.Sleep(2 * time.Millisecond)
				}
				return
			}
		}
		if n > 0 {
			pc.mu.Lock()
			pc.sent.Write(buf[:n])
			pc.mu.Unlock()
			if _, werr := pc.server.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			return
		}
	}
}

// down relays target -> initiator, each chunk delayed by the delay in force
// when it was read.
func (p *proxy) down(pc *pconn) {
	defer p.wg.Done()
	defer pc.client.Close()
	type chunk struct {
		b  []byte
		at time.Time
	}
	q := make(chan chunk, 1024)
	go func() {
		defer close(q)
		for {
			buf := make([]byte, 64<<10)
			n, err := pc.server.Read(buf)
			if n > 0 {
				q <- chunk{buf[:n], time.Now().Add(time.Duration(p.delay.Load()))}
			}
			if err != nil {
				return
			}
		}
	}()
	for c := range q {
		time.Sleep(time.Until(c.at))
		if _, err := pc.client.Write(c.b); err != nil {
			pc.server.Close()
			for range q {
			}
			return
		}
	}
}

func (p *proxy) isDropped(pc *pconn) bool {
	pc.mu.Lock()
	defer pc.mu.Unlock()
	return pc.dropped
}

func (p *proxy) isClosed() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.closed
}

// dropAll closes every relayed connection at once, both sides.
func (p *proxy) dropAll() {
	p.mu.Lock()
	conns := append([]*pconn(nil), p.conns...)
	p.mu.Unlock()
	for _, c := range conns {
		c.mu.Lock()
		c.dropped = true
		c.mu.Unlock()
		c.client.Close()
		c.server.Close()
	}
}

// recorded returns what the initiator sent on each connection so far.
func (p *proxy) recorded() [][]byte {
	p.mu.Lock()
	defer p.mu.Unlock()
	out := make([][]byte, len(p.conns))
	for i, c := range p.conns {
		c.mu.Lock()
		out[i] = bytes.Clone(c.sent.Bytes())
		c.mu.Unlock()
	}
	return out
}

func (p *proxy) close() {
	p.mu.Lock()
	p.closed = true
	p.mu.Unlock()
	p.ln.Close()
	p.dropAll()
	done := make(chan struct{})
	go func() { p.wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		p.t.Errorf("proxy goroutines still running 10 s after close")
	}
}

// throughProxy returns d with its TCP data port replaced by the proxy's:
// the control plane is reached directly, the data plane through the proxy.
func throughProxy(d core.EngineDesc, p *proxy) core.EngineDesc {
	d.Backends = append([]core.BackendBlob(nil), d.Backends...)
	for i, b := range d.Backends {
		if b.Type == core.BackendTCP {
			d.Backends[i].Data = binary.LittleEndian.AppendUint16(nil, p.port())
		}
	}
	return d
}

// dataAddr is the loopback address of an engine's TCP data port.
func dataAddr(d core.EngineDesc) string {
	blob := d.Blob(core.BackendTCP)
	return net.JoinHostPort("127.0.0.1", strconv.Itoa(int(binary.LittleEndian.Uint16(blob))))
}

// reset cuts the idx-th relayed connection with a TCP reset on both sides
// (what a middlebox dropping the flow does); the others go on.
func (p *proxy) reset(idx int) {
	p.mu.Lock()
	var c *pconn
	if idx < len(p.conns) {
		c = p.conns[idx]
	}
	p.mu.Unlock()
	if c == nil {
		return
	}
	c.mu.Lock()
	c.dropped = true
	c.mu.Unlock()
	for _, x := range []net.Conn{c.client, c.server} {
		if tc, ok := x.(*net.TCPConn); ok {
			tc.SetLinger(0)
		}
		x.Close()
	}
}

// count is how many connections the proxy has relayed.
func (p *proxy) count() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.conns)
}
