package compress

import (
	"fmt"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"github.com/klauspost/compress/huff0"
	"github.com/klauspost/compress/zstd"
)

// Options tune a Compressor. Zero fields take the defaults.
type Options struct {
	// BlockSize is the raw size of a block, the unit compressed by one
	// worker (default 128 KiB, at most MaxBlockSize).
	BlockSize int
	// Workers bounds the goroutines compressing or decompressing at once
	// across all calls (default GOMAXPROCS).
	Workers int
}

// Compressor encodes and decodes frames. It is safe for concurrent use; one
// per data plane is enough.
type Compressor struct {
	blockSize int
	workers   chan *worker
	nworkers  int
	zenc      *zstd.Encoder
	zdec      *zstd.Decoder
	frames    sync.Pool
	decodes   sync.Pool
	stats     counters
}

// worker is the scratch of one goroutine at work on blocks.
type worker struct {
	a, b   []byte
	sample []byte
	huff   huff0.Scratch
	probe  []byte
}

func (w *worker) scratch(n int) ([]byte, []byte) {
	if cap(w.a) < n {
		w.a = make([]byte, n)
		w.b = make([]byte, n)
	}
	return w.a[:n], w.b[:n]
}

// New builds a Compressor.
func New(o Options) (*Compressor, error) {
	if o.BlockSize <= 0 {
		o.BlockSize = 128 << 10
	}
	o.BlockSize = min(max(o.BlockSize, 4<<10), MaxBlockSize)
	if o.Workers <= 0 {
		o.Workers = runtime.GOMAXPROCS(0)
	}
	zenc, err := zstd.NewWriter(nil,
		zstd.WithEncoderLevel(zstd.SpeedFastest),
		zstd.WithEncoderConcurrency(o.Workers),
		zstd.WithEncoderCRC(false),
		zstd.WithZeroFrames(true),
		zstd.WithAllLitEntropyCompression(true),
		zstd.WithWindowSize(windowFor(o.BlockSize)))
	if err != nil {
		return nil, fmt.Errorf("compress: zstd encoder: %w", err)
	}
	zdec, err := zstd.NewReader(nil,
		zstd.WithDecoderConcurrency(o.Workers),
		zstd.WithDecoderMaxMemory(MaxBlockSize),
		zstd.WithDecoderMaxWindow(MaxBlockSize),
		zstd.WithDecodeAllCapLimit(true),
		zstd.IgnoreChecksum(true))
	if err != nil {
		zenc.Close()
		return nil, fmt.Errorf("compress: zstd decoder: %w", err)
	}
	c := &Compressor{blockSize: o.BlockSize, nworkers: o.Workers, zenc: zenc, zdec: zdec,
		workers: make(chan *worker, o.Workers)}
	for range o.Workers {
		c.workers <- &worker{}
	}
	return c, nil
}

// windowFor is the smallest zstd window (a power of two) that holds a block.
func windowFor(n int) int {
	w := zstd.MinWindowSize
	for w < n {
		w <<= 1
	}
	return w
}

// Close releases the codecs. The Compressor must not be used afterwards.
func (c *Compressor) Close() {
	c.zenc.Close()
	c.zdec.Close()
}

// BlockSize is the raw size of a block.
func (c *Compressor) BlockSize() int { return c.blockSize }

// Workers is the most goroutines at work at once.
func (c *Compressor) Workers() int { return c.nworkers }

// parallel calls fn for every index below n on at most Workers goroutines
// and returns the first error. The caller's goroutine takes part; helpers
// start only for workers that are free now.
func (c *Compressor) parallel(n int, fn func(w *worker, i int) error) error {
	r := &run{n: int64(n), fn: fn}
	w := <-c.workers
spawn:
	for extra := n - 1; extra > 0; extra-- {
		select {
		case h := <-c.workers:
			r.wg.Add(1)
			go c.help(r, h)
		default:
			break spawn
		}
	}
	r.work(w)
	c.workers <- w
	r.wg.Wait()
	return r.err
}

func (c *Compressor) help(r *run, w *worker) {
	r.work(w)
	c.workers <- w
	r.wg.Done()
}

// run is one parallel pass over n items.
type run struct {
	next   atomic.Int64
	n      int64
	fn     func(w *worker, i int) error
	failed atomic.Bool
	once   sync.Once
	err    error
	wg     sync.WaitGroup
}

func (r *run) work(w *worker) {
	for !r.failed.Load() {
		i := r.next.Add(1) - 1
		if i >= r.n {
			return
		}
		if err := r.fn(w, int(i)); err != nil {
			r.once.Do(func() { r.err = err })
			r.failed.Store(true)
		}
	}
}

// counters are the running totals behind Stats.
type counters struct {
	encFrames, encRaw, encWire, encNanos, stored atomic.Uint64
	shuffled                                     atomic.Uint64
	decFrames, decRaw, decWire, decNanos         atomic.Uint64
}

func (s *counters) addEncode(raw, wire, stored int, shuffled bool, d time.Duration) {
	s.encFrames.Add(1)
	if shuffled {
		s.shuffled.Add(1)
	}
	s.encRaw.Add(uint64(raw))
	s.encWire.Add(uint64(wire))
	s.stored.Add(uint64(stored))
	s.encNanos.Add(uint64(d))
}

func (s *counters) addDecode(raw, wire int, d time.Duration) {
	s.decFrames.Add(1)
	s.decRaw.Add(uint64(raw))
	s.decWire.Add(uint64(wire))
	s.decNanos.Add(uint64(d))
}

// Stats are the totals of a Compressor since it was made.
type Stats struct {
	// Frames encoded (ShuffledFrames of them shuffled), their raw bytes in
	// and wire bytes out, blocks stored because they did not shrink, and
	// the time spent encoding.
	EncodedFrames, ShuffledFrames, RawIn, WireOut, StoredBlocks uint64
	EncodeTime                                                  time.Duration
	// Frames decoded, their wire bytes in and raw bytes out, and the time
	// spent decoding.
	DecodedFrames, WireIn, RawOut uint64
	DecodeTime                    time.Duration
}

// Ratio is wire bytes over raw bytes of what was encoded (1 when nothing
// was).
func (s Stats) Ratio() float64 {
	if s.RawIn == 0 {
		return 1
	}
	return float64(s.WireOut) / float64(s.RawIn)
}

// Stats reads the totals.
func (c *Compressor) Stats() Stats {
	s := &c.stats
	return Stats{
		EncodedFrames: s.encFrames.Load(), ShuffledFrames: s.shuffled.Load(), RawIn: s.encRaw.Load(), WireOut: s.encWire.Load(),
		StoredBlocks: s.stored.Load(), EncodeTime: time.Duration(s.encNanos.Load()),
		DecodedFrames: s.decFrames.Load(), WireIn: s.decWire.Load(), RawOut: s.decRaw.Load(),
		DecodeTime: time.Duration(s.decNanos.Load()),
	}
}
