package main

import (
	"fmt"
	"io"
	"math"
	"os"
	"slices"
	"time"

	"github.com/mori-go/mori-go/core"
	"github.com/mori-go/mori-go/internal/hostmem"
	"github.com/mori-go/mori-go/internal/kvdata"
)

// alternateCheck compares auto (o.against; off for a control of the
// method itself) with off in one interleaved run on each
// kind of data: an off and an auto initiator live side by side (each warms
// up for o.warm, auto learning from nothing), then o.alternate pairs of
// slices (o.sliceBatches batches each, or o.slice of time), off and auto
// in turn, in ABBA order so that neither always goes first. Load from
// elsewhere on the machine mostly lasts longer than a slice and hits both
// halves of a pair alike. Each pair gives auto's GB/s over off's; the
// table shows their median with quartiles and min–max, their geometric
// mean with its 95% interval, auto's GB/s over off's over all the slices
// (all bytes over all the time of each), and what auto chose meanwhile.
func alternateCheck(w io.Writer, o options, inf targetInfo) error {
	ed, md, src, err := inf.prepare(o)
	if err != nil {
		return err
	}
	defer src.Free()
	slice := o.slice.String()
	if o.sliceBatches > 0 {
		slice = fmt.Sprintf("%d-batch", o.sliceBatches)
	}
	fmt.Fprintf(w, "\n#### %s: %s over off, %d interleaved pairs of %s slices (ABBA order, after %s of warm-up each)\n\n", o.label, o.against, o.alternate, slice, o.warm)
	fmt.Fprintf(w, "| data | pairs: %[1]s/off median | quartiles | min–max | geometric mean (95%% interval) | all slices: %[1]s/off | auto while measured: batches off, s2, zstd |\n", o.against)
	fmt.Fprintln(w, "|---|---:|---:|---:|---:|---:|---|")
	for _, kind := range o.kinds {
		if err := kvdata.Fill(kvdata.Kind(kind), src.Bytes(), 11); err != nil {
			return err
		}
		row, err := alternateKind(o, ed, md, src, kind)
		if err != nil {
			return fmt.Errorf("%s: %w", kind, err)
		}
		fmt.Fprintln(w, row)
	}
	return nil
}

// alternateKind runs the pairs on one kind of data and returns its row.
func alternateKind(o options, ed core.EngineDesc, md core.MemoryDesc, src *hostmem.Buffer, kind string) (string, error) {
	off, err := newWriter(o, ed, md, src, "off", elemFor(kind), fmt.Sprintf("bench-off-%d", os.Getpid()))
	if err != nil {
		return "", err
	}
	defer off.b.Close()
	auto, err := newWriter(o, ed, md, src, o.against, elemFor(kind), fmt.Sprintf("bench-%s-%d", o.against, os.Getpid()))
	if err != nil {
		return "", err
	}
	defer auto.b.Close()
	for _, wr := range []*writer{off, auto} {
		if _, err := wr.run(o.warm); err != nil {
			return "", err
		}
	}
	before := auto.b.CompressionStats().Peers[ed.Key]
	var ratios []float64
	var bytes [2]uint64
	var secs [2]float64
	for i := range o.alternate {
		order := []int{0, 1} // 0: off, 1: auto
		if i%2 == 1 {
			order = []int{1, 0}
		}
		var gbps [2]float64
		for _, m := range order {
			wr := []*writer{off, auto}[m]
			start := time.Now()
			var n uint64
			if o.sliceBatches > 0 {
				n, err = wr.runBatches(o.sliceBatches)
			} else {
				n, err = wr.run(o.slice)
			}
			if err != nil {
				return "", err
			}
			s := time.Since(start).Seconds()
			gbps[m] = float64(n) / s / 1e9
			bytes[m] += n
			secs[m] += s
		}
		ratios = append(ratios, gbps[1]/gbps[0])
	}
	after := auto.b.CompressionStats().Peers[ed.Key] // zero unless auto
	chosen := func(c string) uint64 { return after.Batches[c] - before.Batches[c] }
	slices.Sort(ratios)
	n := len(ratios)
	gm, lo, hi := geoMean(ratios)
	return fmt.Sprintf("| %s | %.3f | %.3f–%.3f | %.2f–%.2f | %.3f (%.3f–%.3f) | %.3f | %d, %d, %d |", kind,
		ratios[n/2], ratios[n/4], ratios[(3*n)/4], ratios[0], ratios[n-1], gm, lo, hi,
		(float64(bytes[1])/secs[1])/(float64(bytes[0])/secs[0]), chosen("off"), chosen("s2"), chosen("zstd")), nil
}

// geoMean is the geometric mean of xs with a 95% interval (normal
// approximation on the logarithms).
func geoMean(xs []float64) (mean, lo, hi float64) {
	var sum, sq float64
	for _, x := range xs {
		sum += math.Log(x)
	}
	m := sum / float64(len(xs))
	for _, x := range xs {
		sq += (math.Log(x) - m) * (math.Log(x) - m)
	}
	half := 0.0
	if len(xs) > 1 {
		half = 1.96 * math.Sqrt(sq/float64(len(xs)-1)/float64(len(xs)))
	}
	return math.Exp(m), math.Exp(m - half), math.Exp(m + half)
}
