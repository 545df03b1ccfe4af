// Command mori-soak runs mori-go engines for a long time under mixed load
// with peers coming and going, checks every byte, and samples the process
// (RSS, live heap, goroutines, descriptors) to show whether it stays flat.
//
//	mori-soak -duration 1h          the soak
//	mori-soak -duration 2m          a quick check
//	mori-soak -duration 1h -csv soak.csv   also write every sample to a CSV file
//
// One hub engine talks to a changing set of peer engines, all in this
// process on loopback. Workers run batches of 1 to 8 transfers, each of 1
// to 16 ranges of 1 byte to 1 MiB: the hub writes to and reads from peers,
// and peers write into the hub. Every few seconds a peer goes away, in
// turn: gracefully (its transfers drained, deregistered, closed), closed
// with transfers in flight, deregistered by the hub with transfers in
// flight, or its memory deregistered with transfers in flight; a new peer
// (new key) takes its place. Transfers hit by such a departure may fail
// ("expected failures"); any other failure, and any byte that differs, is
// an error.
//
// It prints one line per sample, then plots of the samples and a verdict:
// PASS when no error occurred, the curves are flat after warm-up, and the
// goroutines and descriptors come back to their starting level once every
// engine is closed. The exit status is 0 on PASS, 1 otherwise.
package main

import (
	"flag"
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"runtime"
	"runtime/pprof"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/mori-go/mori-go/core"
	"github.com/mori-go/mori-go/core/engine"
	"github.com/mori-go/mori-go/internal/hostmem"
	"github.com/mori-go/mori-go/internal/procstat"
	"github.com/mori-go/mori-go/stack"
)

var (
	duration = flag.Duration("duration", time.Hour, "how long to run")
	interval = flag.Duration("sample", 0, "sampling interval (0: duration/40, between 2 s and 60 s)")
	nPeers   = flag.Int("peers", 8, "peer engines alive at a time")
	nWorkers = flag.Int("workers", 4, "concurrent workers")
	churn    = flag.Duration("churn", 3*time.Second, "a peer leaves and a new one joins this often")
	streams  = flag.Int("streams", 2, "TCP streams per peer")
	timeout  = flag.Duration("timeout", 20*time.Second, "transfer timeout")
	seed     = flag.Uint64("seed", 1, "random seed")
	memprof  = flag.String("memprofile", "", "write a heap profile here at the end, before the engines close")
	tol      = flag.Float64("tolerance", 0.10, "flatness: growth allowed from the middle to the last third of the run, as a fraction")
	csvPath  = flag.String("csv", "", "write every sample (elapsed, transfers/s, RSS, live heap, goroutines, fds, ...) to this CSV file as the run goes")
)

const (
	slot     = 4 << 20 // bytes of each region a worker owns
	maxRange = 1 << 20
)

func main() {
	flag.Parse()
	if *interval <= 0 {
		*interval = min(max(*duration/40, 2*time.Second), time.Minute)
	}
	var csvOut *csvLog // opened first, so that its descriptor is in the starting level
	var err error
	if *csvPath != "" {
		csvOut, err = openCSV(*csvPath)
	}
	var s *soak
	if err == nil {
		s, err = newSoak()
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "mori-soak:", err)
		os.Exit(1)
	}
	s.csv = csvOut
	ok := s.run()
	s.csv.close()
	if !ok {
		os.Exit(1)
	}
}

// peer is one engine on the other side, with a region of slot bytes per
// worker.
type peer struct {
	e    *engine.Engine
	mem  *hostmem.Buffer
	desc core.MemoryDesc

	mu      sync.Mutex
	users   int
	leaving bool // no new batch may start
	abrupt  bool // left with transfers in flight: their failures are expected
	drained *sync.Cond
}

type soak struct {
	hub               *engine.Engine
	hubSrc, hubDst    *hostmem.Buffer // hub -> peer writes come from src, reads land in dst
	hubInbox          *hostmem.Buffer // peer -> hub writes land here
	srcD, dstD, inbox core.MemoryDesc

	mu    sync.Mutex
	peers []*peer
	next  int // key number of the next peer

	ok, expected, errs, bytes, created, departures atomic.Int64
	errMu                                          sync.Mutex
	errList                                        []string
	samples                                        []sampleRow
	base                                           sampleRow
	start                                          time.Time
	csv                                            *csvLog // nil without -csv
}

type sampleRow struct {
	at                 time.Duration
	ok, expected, errs int64
	bytes              int64
	peers              int
	hubInbound         int // entries in the hub's inbound status table
	created            int64
	liveHeap, heapSys  uint64
	rss                uint64
	goroutines, fds    int
}

func cfg(key string) stack.Config {
	c := stack.Config{Config: engine.Config{Key: key, TransferTimeout: *timeout}}
	c.TCP.Streams = *streams
	c.TCP.StallTimeout = 10 * time.Second
	return c
}

func startEngine(key string) (*engine.Engine, error) {
	e, err := stack.New(cfg(key))
	if err != nil {
		return nil, err
	}
	if _, err := e.CreateBackend(core.BackendTCP, nil); err != nil {
		e.Close()
		return nil, err
	}
	return e, nil
}

func newSoak() (*soak, error) {
	s := &soak{}
	s.base = s.sample()
	var err error
	if s.hub, err = startEngine("soak-hub"); err != nil {
		return nil, err
	}
	n := *nWorkers * slot
	for _, b := range []**hostmem.Buffer{&s.hubSrc, &s.hubDst, &s.hubInbox} {
		if *b, err = hostmem.Alloc(n); err != nil {
			return nil, err
		}
	}
	for _, x := range []struct {
		b *hostmem.Buffer
		d *core.MemoryDesc
	}{{s.hubSrc, &s.srcD}, {s.hubDst, &s.dstD}, {s.hubInbox, &s.inbox}} {
		if *x.d, err = s.hub.RegisterMemory(x.b.Addr(), uint64(x.b.Len()), -1, core.LocationCPU); err != nil {
			return nil, err
		}
	}
	for range *nPeers {
		p, err := s.newPeer()
		if err != nil {
			return nil, err
		}
		s.peers = append(s.peers, p)
	}
	return s, nil
}

func (s *soak) newPeer() (*peer, error) {
	s.mu.Lock()
	key := fmt.Sprintf("soak-peer-%d", s.next)
	s.next++
	s.mu.Unlock()
	e, err := startEngine(key)
	if err != nil {
		return nil, err
	}
	p := &peer{e: e}
	p.drained = sync.NewCond(&p.mu)
	fail := func(err error) (*peer, error) {
		e.Close()
		if p.mem != nil {
			p.mem.Free()
		}
		return nil, err
	}
	if p.mem, err = hostmem.Alloc(*nWorkers * slot); err != nil {
		return fail(err)
	}
	if p.desc, err = e.RegisterMemory(p.mem.Addr(), uint64(p.mem.Len()), -1, core.LocationCPU); err != nil {
		return fail(err)
	}
	if err := s.hub.RegisterRemoteEngine(e.Desc()); err != nil {
		return fail(err)
	}
	if err := e.RegisterRemoteEngine(s.hub.Desc()); err != nil {
		return fail(err)
	}
	s.created.Add(1)
	return p, nil
}

// acquire picks a live peer and counts this worker as its user.
func (s *soak) acquire(r *rand.Rand) *peer {
	for {
		s.mu.Lock()
		p := s.peers[r.IntN(len(s.peers))]
		s.mu.Unlock()
		p.mu.Lock()
		if !p.leaving {
			p.users++
			p.mu.Unlock()
			return p
		}
		p.mu.Unlock()
		time.Sleep(time.Millisecond)
	}
}

func (p *peer) release() {
	p.mu.Lock()
	p.users--
	if p.users == 0 {
		p.drained.Broadcast()
	}
	p.mu.Unlock()
}

func (s *soak) errorf(format string, args ...any) {
	s.errs.Add(1)
	s.errMu.Lock()
	defer s.errMu.Unlock()
	if len(s.errList) < 20 {
		s.errList = append(s.errList, fmt.Sprintf(format, args...))
	}
}

// batch is one worker's batch: requests whose ranges lie in the worker's
// slot, none overlapping another.
func layout(r *rand.Rand, base uint64) [][]core.Range {
	n := 1 + r.IntN(8)
	out := make([][]core.Range, n)
	off := uint64(0)
	for i := range out {
		k := 1 + r.IntN(16)
		for range k {
			// Log-uniform sizes from 1 byte to 1 MiB.
			size := uint64(math.Exp(r.Float64() * math.Log(maxRange)))
			size = max(size, 1)
			gap := uint64(r.IntN(64))
			if off+gap+size > slot {
				break
			}
			out[i] = append(out[i], core.Range{LocalOffset: base + off + gap, RemoteOffset: base + off + gap, Size: size})
			off += gap + size
		}
	}
	// Drop empty requests (the slot filled up).
	k := 0
	for _, rs := range out {
		if len(rs) > 0 {
			out[k] = rs
			k++
		}
	}
	return out[:k]
}

func fill(r *rand.Rand, b []byte) {
	for i := 0; i < len(b); i += 8 {
		v := r.Uint64()
		for k := 0; k < 8 && i+k < len(b); k++ {
			b[i+k] = byte(v >> (8 * k))
		}
	}
}

func equal(a, b []byte) bool { return string(a) == string(b) }

func (s *soak) worker(w int, stop <-chan struct{}, wg *sync.WaitGroup) {
	defer wg.Done()
	r := rand.New(rand.NewPCG(*seed, uint64(w)))
	base := uint64(w) * slot
	for {
		select {
		case <-stop:
			return
		default:
		}
		p := s.acquire(r)
		s.oneBatch(r, p, base, w)
		p.release()
	}
}

func (s *soak) oneBatch(r *rand.Rand, p *peer, base uint64, w int) {
	kind := r.IntN(3) // 0: hub writes, 1: hub reads, 2: peer writes into the hub
	lay := layout(r, base)
	reqs := make([]engine.Request, len(lay))
	sizes := make([]uint64, len(lay))
	from, peerMem := s.hub, p.mem.Bytes()
	var local, remote core.MemoryDesc
	var op core.Op
	var srcBuf, dstBuf []byte
	switch kind {
	case 0:
		op, local, remote, srcBuf, dstBuf = core.OpWrite, s.srcD, p.desc, s.hubSrc.Bytes(), peerMem
	case 1:
		op, local, remote, srcBuf, dstBuf = core.OpRead, s.dstD, p.desc, peerMem, s.hubDst.Bytes()
	default:
		from = p.e
		op, local, remote, srcBuf, dstBuf = core.OpWrite, p.desc, s.inbox, peerMem, s.hubInbox.Bytes()
	}
	for i, rs := range lay {
		for _, rg := range rs {
			fill(r, srcBuf[rg.LocalOffset:rg.LocalOffset+rg.Size])
			sizes[i] += rg.Size
		}
		// The engine owns the ranges it is given: pass a copy.
		reqs[i] = engine.Request{Local: local, Remote: remote, Ranges: append([]core.Range(nil), rs...), UID: from.AllocateTransferUID()}
	}
	sts := from.Submit(op, reqs)
	core.WaitAll(sts, *timeout+5*time.Second)
	p.mu.Lock()
	abrupt := p.abrupt
	p.mu.Unlock()
	for i, st := range sts {
		c := st.Wait(*timeout + 5*time.Second)
		switch {
		case c == core.StatusSuccess:
			for _, rg := range lay[i] {
				// For reads the peer's bytes are the source at the
				// remote offset; for writes the destination is remote.
				var a, b []byte
				if op == core.OpRead {
					a, b = srcBuf[rg.RemoteOffset:rg.RemoteOffset+rg.Size], dstBuf[rg.LocalOffset:rg.LocalOffset+rg.Size]
				} else {
					a, b = srcBuf[rg.LocalOffset:rg.LocalOffset+rg.Size], dstBuf[rg.RemoteOffset:rg.RemoteOffset+rg.Size]
				}
				if !equal(a, b) {
					s.errorf("worker %d: %s to %s: %d bytes at %d differ", w, op, p.e.Key(), rg.Size, rg.RemoteOffset)
				}
			}
			if kind == 2 {
				in, ok := s.hub.PopInboundTransferStatus(p.e.Key(), reqs[i].UID)
				if !ok || in.Code != core.StatusSuccess {
					s.errorf("worker %d: hub's inbound status of %s uid %d: %v %s", w, p.e.Key(), reqs[i].UID, in.Code, in.Message)
				}
			}
			s.ok.Add(1)
			s.bytes.Add(int64(sizes[i]))
		case c.Failed() && abrupt:
			s.expected.Add(1)
			if kind == 2 {
				s.hub.PopInboundTransferStatus(p.e.Key(), reqs[i].UID)
			}
		case c.Failed():
			s.errorf("worker %d: %s with %s failed: %s", w, op, p.e.Key(), st.Message())
		default:
			s.errorf("worker %d: %s with %s still %s after its timeout", w, op, p.e.Key(), c)
		}
	}
}

// depart removes one peer, in one of four ways, and adds a new one.
func (s *soak) depart(r *rand.Rand, n int64) error {
	s.mu.Lock()
	i := r.IntN(len(s.peers))
	p := s.peers[i]
	s.mu.Unlock()
	p.mu.Lock()
	p.leaving = true
	mode := n % 4
	p.abrupt = mode != 0
	if mode == 0 { // graceful: let its batches end first
		for p.users > 0 {
			p.drained.Wait()
		}
	}
	p.mu.Unlock()
	switch mode {
	case 0, 2: // the hub forgets it (in flight, for mode 2), then it closes
		s.hub.DeregisterRemoteEngine(p.e.Desc())
		p.e.DeregisterMemory(p.desc)
		p.e.Close()
	case 1: // it closes with transfers in flight
		p.e.Close()
		s.hub.DeregisterRemoteEngine(p.e.Desc())
	case 3: // its memory goes with transfers in flight
		p.e.DeregisterMemory(p.desc)
		s.hub.DeregisterRemoteEngine(p.e.Desc())
		p.e.Close()
	}
	// Its memory is unmapped once no worker looks at it any more.
	p.mu.Lock()
	for p.users > 0 {
		p.drained.Wait()
	}
	p.mu.Unlock()
	p.mem.Free()
	np, err := s.newPeer()
	if err != nil {
		return err
	}
	s.mu.Lock()
	s.peers[i] = np
	s.mu.Unlock()
	s.departures.Add(1)
	return nil
}

func (s *soak) sample() sampleRow {
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	row := sampleRow{liveHeap: ms.HeapInuse, heapSys: ms.HeapSys, rss: procstat.RSS(), goroutines: runtime.NumGoroutine(), fds: procstat.FDs()}
	if !s.start.IsZero() {
		row.at = time.Since(s.start)
	}
	row.ok, row.expected, row.errs, row.bytes, row.created = s.ok.Load(), s.expected.Load(), s.errs.Load(), s.bytes.Load(), s.created.Load()
	s.mu.Lock()
	row.peers = len(s.peers)
	s.mu.Unlock()
	if s.hub != nil {
		row.hubInbound = s.hub.Inbound().Len()
	}
	return row
}

func mib(n uint64) float64 { return float64(n) / (1 << 20) }

func (s *soak) run() bool {
	fmt.Printf("mori-soak: %s, %d peers (churn every %s), %d workers, %d streams per peer, transfer timeout %s, sample every %s, Go %s, %d CPUs\n",
		*duration, *nPeers, *churn, *nWorkers, *streams, *timeout, *interval, runtime.Version(), runtime.NumCPU())
	fmt.Printf("before any engine: RSS %.1f MiB, live heap %.1f MiB, goroutines %d, fds %d\n\n",
		mib(s.base.rss), mib(s.base.liveHeap), s.base.goroutines, s.base.fds)
	fmt.Printf("%8s %9s %7s %7s %6s %5s %6s %7s %6s %9s %8s %8s %6s %5s\n",
		"elapsed", "transfers", "xfer/s", "MiB/s", "expect", "errs", "peers", "created", "hub-in", "live-heap", "heap-sys", "RSS", "gorout", "fds")
	s.start = time.Now()
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for w := range *nWorkers {
		wg.Add(1)
		go s.worker(w, stop, &wg)
	}
	churnErr := make(chan error, 1)
	var cwg sync.WaitGroup
	cwg.Add(1)
	go func() {
		defer cwg.Done()
		r := rand.New(rand.NewPCG(*seed, 999))
		t := time.NewTicker(*churn)
		defer t.Stop()
		for n := int64(0); ; n++ {
			select {
			case <-stop:
				return
			case <-t.C:
			}
			if err := s.depart(r, n); err != nil {
				churnErr <- err
				return
			}
		}
	}()
	tick := time.NewTicker(*interval)
	end := time.After(*duration)
	prev := s.sample()
	s.samples = append(s.samples, prev)
	s.print(prev, sampleRow{}, 0)
loop:
	for {
		select {
		case <-tick.C:
			row := s.sample()
			s.print(row, prev, *interval)
			s.samples = append(s.samples, row)
			prev = row
		case err := <-churnErr:
			s.errorf("churn: %v", err)
			break loop
		case <-end:
			break loop
		}
	}
	tick.Stop()
	close(stop)
	done := make(chan struct{})
	go func() { wg.Wait(); cwg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(2 * *timeout):
		s.errorf("workers did not stop within %s", 2**timeout)
	}
	final := s.sample()
	s.print(final, prev, final.at-prev.at)
	s.samples = append(s.samples, final)

	if *memprof != "" {
		if f, err := os.Create(*memprof); err == nil {
			runtime.GC()
			pprof.Lookup("heap").WriteTo(f, 0)
			f.Close()
		} else {
			fmt.Fprintln(os.Stderr, "mori-soak:", err)
		}
	}

	// Close everything and see what comes back.
	s.mu.Lock()
	for _, p := range s.peers {
		p.e.Close()
		p.mem.Free()
	}
	s.peers = nil
	s.mu.Unlock()
	s.hub.Close()
	for _, b := range []*hostmem.Buffer{s.hubSrc, s.hubDst, s.hubInbox} {
		b.Free()
	}
	var closed sampleRow
	for i := 0; i < 50; i++ {
		closed = s.sample()
		if closed.goroutines <= s.base.goroutines+1 {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	return s.report(closed)
}

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
