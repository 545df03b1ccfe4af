package tcp

import (
	"crypto/tls"
	"errors"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/mori-go/mori-go/core"
	"github.com/mori-go/mori-go/transport/compress"
)

// frame is one request on its way to a peer, with what its response needs.
type frame struct {
	t       *core.Transfer
	ranges  []core.Range
	payload uint64 // bytes of data this frame moves
	parts   uint32
	buf     []byte // header, entries and small payloads
	// Set by encode: the payload is GPU memory, staged through page-locked
	// buffers while the frame is written (sendStaged); iov is where the
	// frame's place is among the iovecs of its batch.
	staged bool
	iov    int
	// Compression: the codec chosen for the frame's transfer, the meter of
	// the peer's auto policy (nil: not metered), and its wire size.
	codec compress.Codec
	meter *batchMeter
	wire  int
}

var framePool = sync.Pool{New: func() any { return new(frame) }}

func getFrame(t *core.Transfer) *frame {
	f := framePool.Get().(*frame)
	f.t = t
	return f
}

func putFrame(f *frame) {
	f.t = nil
	f.ranges = f.ranges[:0]
	f.payload = 0
	f.staged = false
	f.codec, f.meter, f.wire = compress.Off, nil, 0
	if cap(f.buf) > 4<<20 {
		f.buf = nil
	}
	framePool.Put(f)
}

// peer is the set of streams to one remote engine.
type peer struct {
	b    *Backend
	key  string
	addr string
	next atomic.Uint32
	auto *compress.Auto // the compression policy in auto mode

	mu      sync.Mutex
	streams []*stream
	closed  error
}

func newPeer(b *Backend, key, addr string) *peer {
	return &peer{b: b, key: key, addr: addr, streams: make([]*stream, b.cfg.Streams), auto: b.comp.newAuto()}
}

// connectAll dials every stream in parallel.
func (p *peer) connectAll() error {
	errs := make([]error, len(p.streams))
	var wg sync.WaitGroup
	for i := range p.streams {
		wg.Add(1)
		go func() {
			defer wg.Done()
			s, err := p.dial()
			errs[i] = err
			p.mu.Lock()
			p.streams[i] = s
			p.mu.Unlock()
		}()
	}
	wg.Wait()
	return errors.Join(errs...)
}

func (p *peer) dial() (*stream, error) {
	cfg := &p.b.cfg
	c, err := net.DialTimeout("tcp", p.addr, cfg.DialTimeout)
	if err != nil {
		return nil, core.Errorf(core.ErrConnection, "connect to engine %q at %s: %w", p.key, p.addr, err)
	}
	if tc, ok := c.(*net.TCPConn); ok {
		tc.SetNoDelay(true)
		if err := setCongestion(tc, cfg.Congestion); err != nil {
			c.Close()
			return nil, core.Errorf(core.ErrConnection, "connect to engine %q at %s: %w", p.key, p.addr, err)
		}
	}
	if p.b.env.TLS != nil {
		c = tls.Client(c, p.b.env.TLS.Client) // handshakes on the first read
	}
	c.SetDeadline(time.Now().Add(cfg.DialTimeout))
	ch, err := readChallenge(c)
	if err == nil && ch.Key != p.key {
		err = core.Errorf(core.ErrNotFound, "%s is engine %q, not %q", p.addr, ch.Key, p.key)
	}
	if err == nil {
		h := hello{From: p.b.env.LocalKey, To: p.key, MAC: helloMAC(p.b.env.Secret, ch.Nonce, p.b.env.LocalKey, p.key)}
		_, err = c.Write(h.encode())
	}
	var offer string
	if err == nil {
		offer, err = readVerdictOffer(c)
	}
	if err != nil {
		c.Close()
		if core.CodeOf(err) == core.ErrInternal {
			err = core.Errorf(core.ErrConnection, "handshake with engine %q at %s: %w", p.key, p.addr, err)
		}
		return nil, err
	}
	c.SetDeadline(time.Time{})
	s := &stream{p: p, c: c, compress: p.b.comp != nil && offered(offer)}
	s.rd = respReader{s: s, buf: make([]byte, 64<<10)}
	s.msg = make([]byte, 0, 256)
	if tc, ok := c.(*net.TCPConn); ok {
		s.raw, _ = tc.SyscallConn() // nil (no inline writes) on error
	}
	if s.raw != nil {
		s.drv = s
	}
	s.cond = sync.NewCond(&s.mu)
	go s.writeLoop()
	go s.readLoop()
	return s, nil
}

// pick returns a healthy stream, redialing broken ones. It returns nil and
// an error when the peer cannot be reached.
func (p *peer) pick(i int) (*stream, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed != nil {
		return nil, p.closed
	}
	n := len(p.streams)
	for k := 0; k < n; k++ {
		s := p.streams[(i+k)%n]
		if s != nil && s.healthy() {
			return s, nil
		}
	}
	// Every stream is down: fail at once and redial in the background.
	// Dialing here would hold Submit (and, through p.mu, every submitter
	// to this peer) for up to the dial timeout per request when the peer
	// is a black hole.
	p.redialLocked()
	return nil, core.Errorf(core.ErrConnection, "no connection to engine %q at %s: its %d streams are down (reconnecting in the background)", p.key, p.addr, n)
}

// redial replaces broken streams in the background.
func (p *peer) redialBroken() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.redialLocked()
}

// redialLocked is redialBroken with p.mu held.
func (p *peer) redialLocked() {
	if p.closed != nil {
		return
	}
	for i, s := range p.streams {
		if s != nil && !s.healthy() && !s.redialing {
			s.redialing = true
			go func() {
				ns, err := p.dial()
				p.mu.Lock()
				defer p.mu.Unlock()
				if err != nil {
					p.b.env.Logger.Debug("tcp backend: redial failed", "peer", p.key, "err", err)
					s.redialing = false
					return
				}
				if p.closed != nil {
					ns.fail(p.closed)
					return
				}
				p.streams[i] = ns
			}()
		}
	}
}

func (p *peer) close(err error) {
	p.mu.Lock()
	if p.closed == nil {
		p.closed = err
	}
	streams := p.streams
	p.mu.Unlock()
	for _, s := range streams {
		if s != nil {
			s.fail(err)
		}
	}
}

// submit cuts t into frames and spreads them over the streams. With a
// batch (b not nil) the frames are queued quietly and the batch flushes
// the streams it touched at its end.
func (p *peer) submit(t *core.Transfer, b *streamBatch) {
	cfg := &p.b.cfg
	chunk := uint64(cfg.ChunkSize)
	var frames []*frame
	var cur *frame
	for _, r := range t.Ranges {
		for off := uint64(0); off < r.Size; {
			if cur == nil {
				cur = getFrame(t)
			}
			n := min(r.Size-off, chunk-cur.payload)
			cur.ranges = append(cur.ranges, core.Range{LocalOffset: r.LocalOffset + off, RemoteOffset: r.RemoteOffset + off, Size: n})
			cur.payload += n
			off += n
			if cur.payload >= chunk || len(cur.ranges) >= cfg.MaxEntries {
				frames = append(frames, cur)
				cur = nil
			}
		}
	}
	if cur != nil {
		frames = append(frames, cur)
	}
	codec, meter := p.codecFor(t, len(frames))
	for _, f := range frames {
		f.parts = uint32(len(frames))
		f.codec, f.meter = codec, meter
	}
	t.Begin(len(frames))
	var start int
	if b != nil {
		start = b.start(p, t.Bytes)
	} else {
		start = int(p.next.Add(1))
	}
	for i, f := range frames {
		s, err := p.pick(start + i)
		if err != nil {
			t.FailErr(err)
			for _, f := range frames[i:] {
				putFrame(f)
			}
			return
		}
		if s.drv != nil {
			t.Status.SetDriver(&s.drv)
		}
		if b != nil {
			err = b.enqueue(s, f)
		} else {
			err = s.enqueue(f)
		}
		if err != nil {
			// The stream broke between pick and enqueue: fail; the caller
			// may retry the transfer on the redialed stream.
			t.FailErr(err)
			putFrame(f)
			p.redialBroken()
		}
	}
}
