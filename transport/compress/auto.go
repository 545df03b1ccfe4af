package compress

import (
	"sync"
	"time"
)

// AutoConfig tunes Auto. Zero fields take the defaults.
type AutoConfig struct {
	// Margin is the gain over sending uncompressed that the model must
	// predict before Auto compresses (default 0.15: 15% faster).
	Margin float64
	// SampleBytes is how much of a batch a sample compresses with each
	// codec (default 64 KiB).
	SampleBytes int
	// MaxSampleGap is the most batches between samples once compression
	// cannot pay on this link (default 1024).
	MaxSampleGap int
}

// Auto decides per batch whether compressing pays on one link. It models a
// compressed batch as taking raw/(enc·W) + ratio·raw/link + raw/(dec·W),
// with the link's throughput measured on the frames sent (see LinkBusy and
// LinkDone) and each codec's encode and decode speed (enc, dec, on one
// core) and ratio measured on samples of the data, W being the Compressor's
// workers; it compresses with the faster codec when that beats raw/link by
// Margin. Samples are taken 8 batches apart after the decision changes,
// then grow rarer while it holds (up to 64 batches apart, and up to
// MaxSampleGap while no codec could pay even on perfectly compressible
// data), so a fast link pays almost nothing for Auto. Safe for concurrent
// use.
type Auto struct {
	c   *Compressor
	cfg AutoConfig

	mu   sync.Mutex
	link ewma // wire bytes per second while frames are in flight
	// decayed sums of the link windows' bytes and busy seconds: the link
	// is their ratio, each window weighted by its length
	linkBytes, linkSecs float64
	est                 [numCodecs]estimate
	batches             uint64
	nextProbe           uint64
	probeGap            uint64
	chosen              [numCodecs]uint64
	last                Codec

	// the check of the model (auto_check.go)
	tput      [numCodecs]ewma // raw bytes per second of whole batches
	vetoUntil [numCodecs]uint64
	vetoGap   [numCodecs]uint64
	vetoes    [numCodecs]uint64
	trial     [numCodecs]bool // a trial batch is in flight
	trialAt   [numCodecs]uint64
	sinceOff  uint64

	// the link meter
	inflight  int
	busySince time.Time
	busy      time.Duration
	busyBytes int
}

type estimate struct {
	ratio, enc, dec ewma
}

type ewma struct {
	v float64
	n int
}

func (e *ewma) add(x float64) {
	if e.n == 0 {
		e.v = x
	} else {
		e.v += 0.3 * (x - e.v)
	}
	e.n++
}

// NewAuto makes the policy of one link, sampling with c.
func NewAuto(c *Compressor, cfg AutoConfig) *Auto {
	if cfg.Margin <= 0 {
		cfg.Margin = 0.15
	}
	if cfg.SampleBytes <= 0 {
		cfg.SampleBytes = 64 << 10
	}
	cfg.SampleBytes = min(cfg.SampleBytes, MaxBlockSize)
	if cfg.MaxSampleGap <= 0 {
		cfg.MaxSampleGap = 1024
	}
	return &Auto{c: c, cfg: cfg, probeGap: 1}
}

// Choose returns the codec for a batch (Off: send it uncompressed) and
// whether the caller should Sample the batch first.
func (a *Auto) Choose() (codec Codec, sample bool) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.batches++
	if a.batches >= a.nextProbe {
		sample = true
		a.nextProbe = a.batches + a.probeGap
	}
	codec = a.verify(a.decide())
	a.chosen[codec]++
	return codec, sample
}

// decide applies the model; a.mu is held.
func (a *Auto) decide() Codec {
	if a.link.n == 0 {
		return Off
	}
	link := a.link.v
	best, bestRate := Off, link*(1+a.cfg.Margin)
	canPay := false
	for c := S2; c < numCodecs; c++ {
		e := &a.est[c]
		if e.ratio.n == 0 {
			canPay = true
			continue
		}
		cpu := 1/(e.enc.v*float64(a.c.nworkers)) + 1/(e.dec.v*float64(a.c.nworkers))
		if 1/cpu > bestRate {
			canPay = true
		}
		if rate := 1 / (cpu + e.ratio.v/link); rate > bestRate {
			best, bestRate = c, rate
		}
	}
	switch {
	case !canPay:
		a.probeGap = min(a.probeGap*2, uint64(a.cfg.MaxSampleGap))
	case best != a.last:
		a.probeGap = 8
	default:
		a.probeGap = min(a.probeGap*2, 64)
	}
	a.last = best
	return best
}

// Sample measures both codecs on the start of srcs (shuffled for elem).
func (a *Auto) Sample(elem int, srcs [][]byte) {
	var sp spans
	n := int(min(sp.reset(srcs), uint64(a.cfg.SampleBytes)))
	if n == 0 {
		return
	}
	w := <-a.c.workers
	defer func() { a.c.workers <- w }()
	need := 3*n + regionFor(n)
	if cap(w.sample) < need {
		w.sample = make([]byte, need)
	}
	raw, in, back, out := w.sample[:n], w.sample[n:2*n], w.sample[2*n:3*n], w.sample[3*n:need]
	sp.gather(raw, 0)
	Shuffle(in, raw, elem)
	a.mu.Lock()
	cold := a.est[S2].ratio.n == 0
	a.mu.Unlock()
	var res [numCodecs][3]float64
	for c := S2; c < numCodecs; c++ {
		if cold { // the first run of a codec sets up its tables: not a measure
			a.measure(w, c, in, out, back, elem)
		}
		res[c] = a.measure(w, c, in, out, back, elem)
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	for c := S2; c < numCodecs; c++ {
		a.est[c].ratio.add(res[c][0])
		a.est[c].enc.add(res[c][1])
		a.est[c].dec.add(res[c][2])
	}
}

// measure compresses in with codec c into out and back into back, and
// returns the ratio and the encode and decode rates in bytes per second.
func (a *Auto) measure(w *worker, c Codec, in, out, back []byte, elem int) [3]float64 {
	t0 := time.Now()
	wire, ok := a.c.compressBlock(w, c, out, in, elem)
	t1 := time.Now()
	ratio := 1.0
	if ok {
		ratio = float64(wire) / float64(len(in))
		j := decodeJob{c: a.c, h: header{Codec: c}}
		if elem >= 2 {
			_ = j.decompressPlanes(w, back, out[:wire], elem)
		} else {
			_ = j.decompress(back, out[:wire])
		}
	}
	t2 := time.Now()
	n := float64(len(in))
	rate := func(d time.Duration) float64 { return n / max(d.Seconds(), 1e-7) }
	return [3]float64{ratio, rate(t1.Sub(t0)), rate(t2.Sub(t1))}
}

// A measurement of the link covers at least linkWindow bytes and
// linkWindowTime of busy time: frames in flight together end in bursts, and
// a window must hold several bursts to see the rate and not the burst.
const (
	linkWindow     = 1 << 20
	linkWindowTime = 10 * time.Millisecond
)

// LinkStart marks a frame going onto the wire; LinkDone must follow.
func (a *Auto) LinkStart() {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.inflight == 0 {
		a.busySince = time.Now() // under the lock: intervals never overlap
	}
	a.inflight++
}

// LinkDone marks a frame of wire bytes delivered (acknowledged). The link's
// throughput is wire bytes over the time at least one frame was in flight.
func (a *Auto) LinkDone(wire int) {
	a.mu.Lock()
	defer a.mu.Unlock()
	now := time.Now()
	a.inflight--
	a.busy += now.Sub(a.busySince)
	a.busySince = now
	a.busyBytes += wire
	if a.busyBytes >= linkWindow && a.busy >= linkWindowTime {
		a.addLink(float64(a.busyBytes), a.busy.Seconds())
		a.busy, a.busyBytes = 0, 0
	}
}

// ObserveLink records wire bytes that took d on the link.
func (a *Auto) ObserveLink(wire int, d time.Duration) {
	if d <= 0 {
		return
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	a.addLink(float64(wire), d.Seconds())
}

// addLink folds a window into the link's throughput: the ratio of decayed
// sums of bytes and seconds, not an average of the windows' rates. Frames
// in flight together share the link and are acknowledged in bursts, so
// windows alternate between long slow ones and short fast ones; averaging
// their rates would be dominated by the fast ones. a.mu is held.
func (a *Auto) addLink(bytes, secs float64) {
	a.linkBytes = 0.7*a.linkBytes + bytes
	a.linkSecs = 0.7*a.linkSecs + secs
	a.link.v = a.linkBytes / a.linkSecs
	a.link.n++
}

// AutoStats is what Auto has measured and decided.
type AutoStats struct {
	// Link is the measured link throughput in bytes per second (0: not yet).
	Link float64
	// Batches chosen per codec (index by Codec).
	Chosen [numCodecs]uint64
	// Ratio, Encode and Decode rates (bytes per second, one core) per codec
	// from the samples.
	Ratio, Encode, Decode [numCodecs]float64
	// Batch is the raw bytes per second of whole batches per codec; Vetoes
	// counts the times a codec's batches were not faster than off's.
	Batch  [numCodecs]float64
	Vetoes [numCodecs]uint64
}

// Stats reads what Auto has measured and decided.
func (a *Auto) Stats() AutoStats {
	a.mu.Lock()
	defer a.mu.Unlock()
	s := AutoStats{Link: a.link.v, Chosen: a.chosen, Vetoes: a.vetoes}
	for c := Off; c < numCodecs; c++ {
		s.Batch[c] = a.tput[c].v
	}
	for c := S2; c < numCodecs; c++ {
		s.Ratio[c], s.Encode[c], s.Decode[c] = a.est[c].ratio.v, a.est[c].enc.v, a.est[c].dec.v
	}
	return s
}
