package main

import (
	"fmt"
	"io"
	"os"
	"slices"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/mori-go/mori-go/core"
	"github.com/mori-go/mori-go/internal/hostmem"
	"github.com/mori-go/mori-go/internal/kvdata"
	"github.com/mori-go/mori-go/transport/tcp"
)

// sample is one measurement of one mode on one kind of data.
type sample struct {
	gbps, ratio float64
	chosen      string // auto: batches per codec
}

type key struct{ kind, mode string }

// elemFor is the shuffle element a user would set for each kind of data.
func elemFor(kind string) int {
	if kind == string(kvdata.FP8) {
		return 0
	}
	return 2 // bf16 K/V; random bytes stand in for bf16 that does not compress
}

// measureAll runs every mode on every kind, rounds times, interleaved.
func measureAll(o options, inf targetInfo) (map[key][]sample, error) {
	ed, md, src, err := inf.prepare(o)
	if err != nil {
		return nil, err
	}
	defer src.Free()
	res := map[key][]sample{}
	for round := range o.rounds {
		for _, kind := range o.kinds {
			if err := kvdata.Fill(kvdata.Kind(kind), src.Bytes(), uint64(round+1)); err != nil {
				return nil, err
			}
			for _, mode := range o.modes {
				s, err := measureOne(o, ed, md, src, mode, elemFor(kind))
				if err != nil {
					return nil, fmt.Errorf("%s, %s: %w", kind, mode, err)
				}
				res[key{kind, mode}] = append(res[key{kind, mode}], s)
			}
		}
	}
	return res, nil
}

// newWriter makes an initiator (key) with the mode and the source
// registered, connected to the target; the caller closes w.b.
func newWriter(o options, ed core.EngineDesc, md core.MemoryDesc, src *hostmem.Buffer, mode string, elem int, key string) (*writer, error) {
	env := quietEnv(key, "")
	b, err := tcp.New(tcp.Config{Compression: mode, CompressElemSize: elem}, env)
	if err != nil {
		return nil, err
	}
	local, err := env.Registry.Add(src.Addr(), uint64(src.Len()), core.LocationCPU, -1, true)
	if err == nil {
		err = b.AddPeer(ed)
	}
	if err != nil {
		b.Close()
		return nil, err
	}
	return &writer{o: o, b: b, local: local, remote: md, peer: ed.Key}, nil
}

// measureOne makes an initiator with the mode, lets it warm up, then
// measures writes for o.measure.
func measureOne(o options, ed core.EngineDesc, md core.MemoryDesc, src *hostmem.Buffer, mode string, elem int) (sample, error) {
	w, err := newWriter(o, ed, md, src, mode, elem, fmt.Sprintf("bench-initiator-%d", os.Getpid()))
	if err != nil {
		return sample{}, err
	}
	b := w.b
	defer b.Close()
	if _, err := w.run(o.warm); err != nil {
		return sample{}, err
	}
	before := b.CompressionStats()
	start := time.Now()
	bytes, err := w.run(o.measure)
	if err != nil {
		return sample{}, err
	}
	elapsed := time.Since(start)
	after := b.CompressionStats()
	s := sample{gbps: float64(bytes) / elapsed.Seconds() / 1e9, ratio: 1}
	if raw := after.RawOut - before.RawOut; raw > 0 {
		// Frames sent uncompressed count at ratio 1.
		s.ratio = (float64(after.WireOut-before.WireOut) + float64(bytes-raw)) / float64(bytes)
	}
	if p, ok := after.Peers[ed.Key]; ok {
		z := p.Codecs["zstd"]
		zs := "does not shrink"
		if z.Ratio < 0.999 {
			zs = fmt.Sprintf("%.2f at %.0f/%.0f MB/s a core, vetoed %d times", z.Ratio, z.EncodeBytesSec/1e6, z.DecodeBytesSec/1e6, z.Vetoes)
		}
		s.chosen = fmt.Sprintf("%d, %d, %d (link %.0f MB/s; zstd %s)", p.Batches["off"], p.Batches["s2"], p.Batches["zstd"], p.LinkBytesPerSec/1e6, zs)
	}
	return s, nil
}

// writer keeps o.inflight transfers of o.batch bytes going.
type writer struct {
	o      options
	b      *tcp.Backend
	local  *core.Region
	remote core.MemoryDesc
	peer   string
	next   atomic.Uint64
}

// uids numbers the transfers of the whole process: the target remembers
// the transfers of an initiator key across the initiators made in turn.
var uids atomic.Uint64

func (w *writer) ranges() []core.Range {
	o := w.o
	n := o.batch / o.rangeSize
	base := (w.next.Add(1) * uint64(o.batch)) % uint64(o.region-o.batch+1)
	rs := make([]core.Range, n)
	for i := range rs {
		off := base + uint64(i*o.rangeSize)
		rs[i] = core.Range{LocalOffset: off, RemoteOffset: off, Size: uint64(o.rangeSize)}
	}
	return rs
}

// run writes for d and returns the bytes written.
func (w *writer) run(d time.Duration) (uint64, error) {
	deadline := time.Now().Add(d)
	return w.runWhile(w.o.inflight, func() bool { return time.Now().Before(deadline) })
}

// runBatches writes n batches, up to o.inflight at once, and returns the
// bytes written.
func (w *writer) runBatches(n int) (uint64, error) {
	var left atomic.Int64
	left.Store(int64(n))
	return w.runWhile(min(n, w.o.inflight), func() bool { return left.Add(-1) >= 0 })
}

// runWhile keeps inflight transfers going while more says so.
func (w *writer) runWhile(inflight int, more func() bool) (uint64, error) {
	var total atomic.Uint64
	var firstErr error
	var once sync.Once
	var wg sync.WaitGroup
	for range inflight {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for more() {
				uid := uids.Add(1)
				st := core.NewStatus()
				tr := &core.Transfer{Op: core.OpWrite, UID: uid, Instance: uid, Peer: w.peer, Local: w.local, Remote: w.remote,
					Ranges: w.ranges(), Status: st}
				w.b.Submit(tr)
				if code := st.Wait(time.Minute); code != core.StatusSuccess {
					once.Do(func() { firstErr = fmt.Errorf("write %d: %v: %s", uid, code, st.Message()) })
					return
				}
				total.Add(uint64(w.o.batch))
			}
		}()
	}
	wg.Wait()
	return total.Load(), firstErr
}

func median(xs []float64) float64 {
	xs = slices.Clone(xs)
	sort.Float64s(xs)
	return xs[len(xs)/2]
}

// report prints one markdown table: each mode's median GB/s over the
// rounds, its ratio to off's on the same data, and the wire/raw ratio.
func report(w io.Writer, o options, res map[key][]sample) {
	fmt.Fprintf(w, "\n#### %s\n\n", o.label)
	fmt.Fprintln(w, "| data | mode | GB/s | vs off | wire/raw | auto: batches off, s2, zstd (what it measured) |")
	fmt.Fprintln(w, "|---|---|---:|---:|---:|---|")
	for _, kind := range o.kinds {
		off := 0.0
		if s := res[key{kind, "off"}]; len(s) > 0 {
			off = median(gbps(s))
		}
		for _, mode := range o.modes {
			s := res[key{kind, mode}]
			g := median(gbps(s))
			vs := "—"
			if off > 0 {
				vs = fmt.Sprintf("%.2f", g/off)
			}
			chosen := ""
			if mode == "auto" {
				chosen = s[len(s)-1].chosen
			}
			ratios := make([]float64, len(s))
			for i, x := range s {
				ratios[i] = x.ratio
			}
			fmt.Fprintf(w, "| %s | %s | %.3f | %s | %.3f | %s |\n", kind, mode, g, vs, median(ratios), chosen)
		}
	}
}

func gbps(s []sample) []float64 {
	out := make([]float64, len(s))
	for i, x := range s {
		out[i] = x.gbps
	}
	return out
}

// pairCheck measures off and auto back to back o.pairs times on each kind
// and prints the median of the auto/off ratios of the pairs: load from
// elsewhere on the machine hits both halves of a pair alike.
func pairCheck(w io.Writer, o options, inf targetInfo) error {
	ed, md, src, err := inf.prepare(o)
	if err != nil {
		return err
	}
	defer src.Free()
	fmt.Fprintf(w, "\nauto over off, %d adjacent pairs of %s each (median, min–max):", o.pairs, o.measure)
	for i, kind := range o.kinds {
		if err := kvdata.Fill(kvdata.Kind(kind), src.Bytes(), 7); err != nil {
			return err
		}
		var ratios []float64
		for range o.pairs {
			off, err := measureOne(o, ed, md, src, "off", elemFor(kind))
			if err != nil {
				return err
			}
			auto, err := measureOne(o, ed, md, src, "auto", elemFor(kind))
			if err != nil {
				return err
			}
			ratios = append(ratios, auto.gbps/off.gbps)
		}
		sep := ";"
		if i == len(o.kinds)-1 {
			sep = "."
		}
		fmt.Fprintf(w, " %s %.3f (%.2f–%.2f)%s", kind, median(ratios), slices.Min(ratios), slices.Max(ratios), sep)
	}
	fmt.Fprintln(w)
	return nil
}
