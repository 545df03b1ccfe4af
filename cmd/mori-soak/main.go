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
	"math/rand/v2"
	"os"
	"runtime"
	"runtime/pprof"
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
	s.printHeader()
	s.start = time.Now()
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for w := range *nWorkers {
		wg.Add(1)
		go s.worker(w, stop, &wg)
	}
	churnErr := make(chan error, 1)
	wg.Add(1)
	go s.churn(stop, churnErr, &wg)
	prev := s.sampleUntil(churnErr)
	close(stop)
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(2 * *timeout):
		s.errorf("workers did not stop within %s", 2**timeout)
	}
	final := s.sample()
	s.print(final, prev, final.at-prev.at)
	s.samples = append(s.samples, final)
	writeMemProfile()
	return s.report(s.closeAll())
}

func (s *soak) printHeader() {
	fmt.Printf("mori-soak: %s, %d peers (churn every %s), %d workers, %d streams per peer, transfer timeout %s, sample every %s, Go %s, %d CPUs\n",
		*duration, *nPeers, *churn, *nWorkers, *streams, *timeout, *interval, runtime.Version(), runtime.NumCPU())
	fmt.Printf("before any engine: RSS %.1f MiB, live heap %.1f MiB, goroutines %d, fds %d\n\n",
		mib(s.base.rss), mib(s.base.liveHeap), s.base.goroutines, s.base.fds)
	fmt.Printf("%8s %9s %7s %7s %6s %5s %6s %7s %6s %9s %8s %8s %6s %5s\n",
		"elapsed", "transfers", "xfer/s", "MiB/s", "expect", "errs", "peers", "created", "hub-in", "live-heap", "heap-sys", "RSS", "gorout", "fds")
}

// churn makes a peer depart every -churn until stop.
func (s *soak) churn(stop <-chan struct{}, errs chan<- error, wg *sync.WaitGroup) {
	defer wg.Done()
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
			errs <- err
			return
		}
	}
}

// sampleUntil samples every -interval until -duration has passed or the
// churn fails, and returns the last sample.
func (s *soak) sampleUntil(churnErr <-chan error) sampleRow {
	tick := time.NewTicker(*interval)
	defer tick.Stop()
	end := time.After(*duration)
	prev := s.sample()
	s.samples = append(s.samples, prev)
	s.print(prev, sampleRow{}, 0)
	for {
		select {
		case <-tick.C:
			row := s.sample()
			s.print(row, prev, *interval)
			s.samples = append(s.samples, row)
			prev = row
		case err := <-churnErr:
			s.errorf("churn: %v", err)
			return prev
		case <-end:
			return prev
		}
	}
}

func writeMemProfile() {
	if *memprof == "" {
		return
	}
	f, err := os.Create(*memprof)
	if err != nil {
		fmt.Fprintln(os.Stderr, "mori-soak:", err)
		return
	}
	runtime.GC()
	pprof.Lookup("heap").WriteTo(f, 0)
	f.Close()
}

// closeAll closes every engine and frees every buffer, and returns a
// sample taken once the goroutines have gone (or after 5 s).
func (s *soak) closeAll() sampleRow {
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
	return closed
}
