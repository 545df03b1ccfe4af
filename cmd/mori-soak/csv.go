package main

import (
	"encoding/csv"
	"fmt"
	"os"
	"strconv"
	"time"
)

// csvLog writes one line per sample to a CSV file as the run goes, so that
// a curve can be drawn from it (scripts/plot-soak.py) even if the run is
// cut short.
type csvLog struct {
	f *os.File
	w *csv.Writer
}

var csvHeader = []string{"elapsed_s", "transfers", "transfers_per_s", "mib_per_s", "expected_failures", "errors",
	"peers", "peers_created", "hub_inbound", "live_heap_mib", "heap_sys_mib", "rss_mib", "goroutines", "fds"}

func openCSV(path string) (*csvLog, error) {
	f, err := os.Create(path)
	if err != nil {
		return nil, fmt.Errorf("csv: %w", err)
	}
	c := &csvLog{f: f, w: csv.NewWriter(f)}
	if err := c.w.Write(csvHeader); err != nil {
		f.Close()
		return nil, fmt.Errorf("csv %s: %w", path, err)
	}
	c.w.Flush()
	return c, c.w.Error()
}

// add writes the sample row; prev and dt give the rates since the last one.
func (c *csvLog) add(row, prev sampleRow, dt time.Duration) {
	if c == nil {
		return
	}
	rate, mbs := 0.0, 0.0
	if dt > 0 {
		rate = float64(row.ok+row.expected-prev.ok-prev.expected) / dt.Seconds()
		mbs = float64(row.bytes-prev.bytes) / (1 << 20) / dt.Seconds()
	}
	f := func(v float64) string { return strconv.FormatFloat(v, 'f', 2, 64) }
	i := func(v int64) string { return strconv.FormatInt(v, 10) }
	c.w.Write([]string{f(row.at.Seconds()), i(row.ok + row.expected), f(rate), f(mbs), i(row.expected), i(row.errs),
		i(int64(row.peers)), i(row.created), i(int64(row.hubInbound)), f(mib(row.liveHeap)), f(mib(row.heapSys)),
		f(mib(row.rss)), i(int64(row.goroutines)), i(int64(row.fds))})
	c.w.Flush()
}

func (c *csvLog) close() {
	if c == nil {
		return
	}
	c.w.Flush()
	c.f.Close()
}
