package main

import (
	"fmt"
	"math"
	"strings"
	"time"
)

func (s *soak) print(row, prev sampleRow, dt time.Duration) {
	s.csv.add(row, prev, dt)
	rate, mbs := 0.0, 0.0
	if dt > 0 {
		rate = float64(row.ok+row.expected-prev.ok-prev.expected) / dt.Seconds()
		mbs = float64(row.bytes-prev.bytes) / (1 << 20) / dt.Seconds()
	}
	fmt.Printf("%8s %9d %7.0f %7.1f %6d %5d %6d %7d %6d %8.1fM %7.1fM %7.1fM %6d %5d\n",
		row.at.Round(time.Second), row.ok+row.expected, rate, mbs, row.expected, row.errs, row.peers, row.created, row.hubInbound,
		mib(row.liveHeap), mib(row.heapSys), mib(row.rss), row.goroutines, row.fds)
}

// third returns the mean of a metric over one third of the samples after
// the first (warm-up) one: k = 1 the middle third, k = 2 the last.
func third(rows []sampleRow, k int, f func(sampleRow) float64) float64 {
	rows = rows[1:]
	n := len(rows) / 3
	part := rows[k*n:]
	if k < 2 {
		part = rows[k*n : (k+1)*n]
	}
	sum := 0.0
	for _, r := range part {
		sum += f(r)
	}
	return sum / float64(len(part))
}

func (s *soak) report(closed sampleRow) bool {
	fmt.Println()
	metrics := []struct {
		name  string
		f     func(sampleRow) float64
		unit  string
		slack float64 // absolute growth always allowed
	}{
		{"RSS", func(r sampleRow) float64 { return mib(r.rss) }, "MiB", 16},
		{"live heap", func(r sampleRow) float64 { return mib(r.liveHeap) }, "MiB", 8},
		{"goroutines", func(r sampleRow) float64 { return float64(r.goroutines) }, "", 8},
		{"fds", func(r sampleRow) float64 { return float64(r.fds) }, "", 8},
	}
	for _, m := range metrics[:3] {
		plot(m.name, m.unit, s.samples, m.f)
	}
	pass := true
	var reasons []string
	if len(s.samples) >= 7 {
		for _, m := range metrics {
			mid, last := third(s.samples, 1, m.f), third(s.samples, 2, m.f)
			growth := last - mid
			flat := growth <= math.Max(*tol*mid, m.slack)
			fmt.Printf("%-10s middle third %8.1f %-3s  last third %8.1f %-3s  growth %+7.1f (%+.1f%%)  %s\n",
				m.name, mid, m.unit, last, m.unit, growth, 100*growth/math.Max(mid, 1e-9), map[bool]string{true: "flat", false: "GROWING"}[flat])
			if !flat {
				pass = false
				reasons = append(reasons, m.name+" grows")
			}
		}
	} else {
		fmt.Println("too few samples to judge flatness (run longer or sample more often)")
	}
	last := s.samples[len(s.samples)-1]
	fmt.Printf("\n%d transfers succeeded and were checked (%.1f GiB), %d failed as expected when their peer left, %d errors; %d peers created, %d departures\n",
		last.ok, float64(last.bytes)/(1<<30), last.expected, last.errs, last.created, s.departures.Load())
	if b, ok := s.hub.DataBackend().(interface{ ResponsesReadByWaiters() uint64 }); ok {
		fmt.Printf("responses the hub's waiting threads read themselves: %d\n", b.ResponsesReadByWaiters())
	}
	fmt.Printf("after closing every engine: RSS %.1f MiB, live heap %.1f MiB, goroutines %d (%d at start), fds %d (%d at start)\n",
		mib(closed.rss), mib(closed.liveHeap), closed.goroutines, s.base.goroutines, closed.fds, s.base.fds)
	if last.errs > 0 {
		pass = false
		reasons = append(reasons, fmt.Sprintf("%d errors", last.errs))
		for _, e := range s.errList {
			fmt.Println("  error:", e)
		}
	}
	if closed.goroutines > s.base.goroutines+1 {
		pass = false
		reasons = append(reasons, fmt.Sprintf("%d goroutines left after closing", closed.goroutines-s.base.goroutines))
	}
	if closed.fds > s.base.fds+1 {
		pass = false
		reasons = append(reasons, fmt.Sprintf("%d descriptors left after closing", closed.fds-s.base.fds))
	}
	if pass {
		fmt.Println("verdict: PASS (flat, no errors, everything released)")
	} else {
		fmt.Println("verdict: FAIL:", strings.Join(reasons, "; "))
	}
	return pass
}

// plot draws a metric over time, y from 0 to its maximum, 10 rows.
func plot(name, unit string, rows []sampleRow, f func(sampleRow) float64) {
	const height, width = 10, 72
	vals := make([]float64, len(rows))
	top := 0.0
	for i, r := range rows {
		vals[i] = f(r)
		top = math.Max(top, vals[i])
	}
	if top == 0 {
		top = 1
	}
	cols := min(len(vals), width)
	col := func(c int) float64 { // mean of the samples falling in column c
		lo, hi := c*len(vals)/cols, (c+1)*len(vals)/cols
		sum := 0.0
		for _, v := range vals[lo:hi] {
			sum += v
		}
		return sum / float64(hi-lo)
	}
	fmt.Printf("%s (%s), %s per column\n", name, unit, (rows[len(rows)-1].at / time.Duration(cols)).Round(time.Second))
	for y := height; y >= 1; y-- {
		level := top * float64(y) / height
		var b strings.Builder
		for c := range cols {
			if col(c) >= level-top/(2*height) {
				b.WriteByte('#')
			} else {
				b.WriteByte(' ')
			}
		}
		fmt.Printf("%9.1f |%s\n", level, b.String())
	}
	fmt.Printf("%9s +%s\n\n", "0", strings.Repeat("-", cols))
}
