// Command mori-bench measures mori-go's TCP data plane against a raw TCP
// socket moving the same bytes on the same machine, in one run, and prints
// each figure beside its baseline as a ratio. These machines are noisy: the
// ratio is the figure, not the raw time.
//
//	mori-bench                  the standard table
//	mori-bench -quick           a short smoke run (CI)
//	mori-bench -tls             also the same transfers over TLS 1.3 (a
//	                            throw-away CA), interleaved, with TLS/plain
package main

import (
	"crypto/rand"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"runtime/pprof"
	"slices"
	"sort"
	"time"

	"github.com/mori-go/mori-go/core"
	"github.com/mori-go/mori-go/core/engine"
	"github.com/mori-go/mori-go/core/tlsconf"
	"github.com/mori-go/mori-go/core/tlsconf/tlstest"
	"github.com/mori-go/mori-go/internal/hostmem"
	"github.com/mori-go/mori-go/stack"
)

type workload struct {
	name   string
	size   int // bytes per range
	ranges int // ranges per batch
}

func main() {
	quick := flag.Bool("quick", false, "short smoke run")
	minTime := flag.Duration("time", 2*time.Second, "time per measurement")
	streams := flag.Int("streams", 0, "TCP streams per peer (0: default)")
	only := flag.String("only", "", "run only the workload with this name")
	cpuprofile := flag.String("cpuprofile", "", "write a CPU profile here")
	withTLS := flag.Bool("tls", false, "also measure the data plane over TLS 1.3, in the same run")
	flag.Parse()
	if *cpuprofile != "" {
		f, err := os.Create(*cpuprofile)
		if err != nil {
			fmt.Fprintln(os.Stderr, "mori-bench:", err)
			os.Exit(1)
		}
		pprof.StartCPUProfile(f)
		defer pprof.StopCPUProfile()
	}
	works := []workload{
		{"64 MiB ranges", 64 << 20, 4},
		{"1 MiB ranges", 1 << 20, 64},
		{"64 KiB ranges", 64 << 10, 1024},
		{"4 KiB ranges", 4 << 10, 8192},
		{"1 KiB ranges", 1 << 10, 10000},
	}
	if *only != "" {
		works = slices.DeleteFunc(works, func(w workload) bool { return w.name != *only })
	}
	if *quick {
		*minTime = 200 * time.Millisecond
		works = []workload{{"1 MiB ranges", 1 << 20, 16}, {"4 KiB ranges", 4 << 10, 2048}}
	}
	if err := run(works, *minTime, *streams, *withTLS); err != nil {
		fmt.Fprintln(os.Stderr, "mori-bench:", err)
		pprof.StopCPUProfile()
		os.Exit(1)
	}
}

func run(works []workload, minTime time.Duration, streams int, withTLS bool) error {
	maxBytes := 0
	for _, w := range works {
		maxBytes = max(maxBytes, w.size*w.ranges)
	}
	// Source and target buffers twice the batch, ranges scattered to every
	// other slot so that nothing coalesces.
	src, err := hostmem.Alloc(maxBytes)
	if err != nil {
		return err
	}
	dst, err := hostmem.Alloc(2 * maxBytes)
	if err != nil {
		return err
	}
	rand.Read(src.Bytes())
	clear(dst.Bytes())

	plain, err := enginePair(src, dst, streams, "bench", tlsconf.Files{})
	if err != nil {
		return err
	}
	defer plain.close()
	var secure *side
	if withTLS {
		files, done, err := tlsFiles()
		if err != nil {
			return err
		}
		defer done()
		if secure, err = enginePair(src, dst, streams, "bench-tls", files); err != nil {
			return err
		}
		defer secure.close()
	}
	raw, err := newRawPair(dst.Bytes())
	if err != nil {
		return err
	}
	defer raw.close()

	fmt.Printf("mori-go TCP data plane vs raw TCP socket, loopback, one process, %d streams per peer\n", plain.a.DataBackend().(interface{ Streams() int }).Streams())
	fmt.Printf("%-16s %12s %12s %8s %14s", "workload", "raw GB/s", "mori GB/s", "ratio", "mori ranges/s")
	if withTLS {
		fmt.Printf(" %12s %10s", "TLS GB/s", "TLS/plain")
	}
	fmt.Println()
	for _, w := range works {
		if err := measure(w, minTime, raw, plain, secure, src, dst); err != nil {
			return err
		}
	}
	return nil
}

// side is an initiator engine and a target engine registered with it, src
// registered with the initiator and dst with the target.
type side struct {
	a, b   *engine.Engine
	sd, dd core.MemoryDesc
}

func (s *side) close() {
	s.a.Close()
	s.b.Close()
}

// write moves ranges and returns the rate in bytes per second.
func (s *side) write(ranges []core.Range, bytes float64) (float64, error) {
	t0 := time.Now()
	st := s.a.Submit(core.OpWrite, []engine.Request{{Local: s.sd, Remote: s.dd, Ranges: ranges, UID: s.a.AllocateTransferUID()}})
	if c := core.WaitAll(st, time.Minute); c != core.StatusSuccess {
		return 0, fmt.Errorf("%s: %s", c, st[0].Message())
	}
	return bytes / time.Since(t0).Seconds(), nil
}

// tlsFiles issues a throw-away CA and an engine certificate into a
// temporary directory; done removes it.
func tlsFiles() (f tlsconf.Files, done func(), err error) {
	dir, err := os.MkdirTemp("", "mori-bench-tls")
	if err != nil {
		return f, nil, err
	}
	done = func() { os.RemoveAll(dir) }
	ca, err := tlstest.NewCA("mori-bench")
	if err == nil {
		f, err = ca.WriteFiles(dir, "engine")
	}
	if err != nil {
		done()
	}
	return f, done, err
}

// enginePair starts an initiator and a target engine over TCP (TLS with
// tls set), the target registered with the initiator, src registered with
// the initiator and dst with the target.
func enginePair(src, dst *hostmem.Buffer, streams int, name string, tls tlsconf.Files) (p *side, err error) {
	cfg := func(key string) stack.Config {
		c := stack.Config{Config: engine.Config{Key: key, TLS: tls}}
		c.TCP.Streams = streams
		return c
	}
	var a, b *engine.Engine
	var sd, dd core.MemoryDesc
	if a, err = stack.New(cfg(name + "-initiator")); err != nil {
		return
	}
	if b, err = stack.New(cfg(name + "-target")); err != nil {
		a.Close()
		return
	}
	defer func() {
		if err != nil {
			a.Close()
			b.Close()
		}
	}()
	for _, e := range []*engine.Engine{a, b} {
		if _, err = e.CreateBackend(core.BackendTCP, nil); err != nil {
			return
		}
	}
	if err = a.RegisterRemoteEngine(b.Desc()); err != nil {
		return
	}
	if sd, err = a.RegisterMemory(src.Addr(), uint64(src.Len()), -1, core.LocationCPU); err != nil {
		return
	}
	if dd, err = b.RegisterMemory(dst.Addr(), uint64(dst.Len()), -1, core.LocationCPU); err != nil {
		return
	}
	return &side{a: a, b: b, sd: sd, dd: dd}, nil
}

// measure runs workload w on the raw socket and the engines (secure: over
// TLS, nil: not measured), interleaved, for at least minTime, and prints
// the medians.
func measure(w workload, minTime time.Duration, raw *rawPair, plain, secure *side, src, dst *hostmem.Buffer) error {
	ranges := make([]core.Range, w.ranges)
	for i := range ranges {
		ranges[i] = core.Range{LocalOffset: uint64(i * w.size), RemoteOffset: uint64(2 * i * w.size), Size: uint64(w.size)}
	}
	bytes := float64(w.size * w.ranges)
	// Interleave baseline and engine runs so that drift hits both.
	var rawRates, moriRates, tlsRates []float64
	deadline := time.Now().Add(minTime)
	for len(rawRates) < 3 || time.Now().Before(deadline) {
		t0 := time.Now()
		if err := raw.send(src.Bytes(), ranges); err != nil {
			return err
		}
		rawRates = append(rawRates, bytes/time.Since(t0).Seconds())
		r, err := plain.write(ranges, bytes)
		if err != nil {
			return fmt.Errorf("%s: %w", w.name, err)
		}
		moriRates = append(moriRates, r)
		if secure != nil {
			if r, err = secure.write(ranges, bytes); err != nil {
				return fmt.Errorf("%s over TLS: %w", w.name, err)
			}
			tlsRates = append(tlsRates, r)
		}
	}
	// Spot-check the last transfer.
	for _, i := range []int{0, w.ranges - 1} {
		r := ranges[i]
		if !slices.Equal(src.Bytes()[r.LocalOffset:r.LocalOffset+r.Size], dst.Bytes()[r.RemoteOffset:r.RemoteOffset+r.Size]) {
			return fmt.Errorf("%s: range %d arrived corrupted", w.name, i)
		}
	}
	rr, mr := median(rawRates), median(moriRates)
	fmt.Printf("%-16s %12.2f %12.2f %7.0f%% %14.0f", w.name, rr/1e9, mr/1e9, 100*mr/rr, mr/float64(w.size))
	if secure != nil {
		fmt.Printf(" %12.2f %9.0f%%", median(tlsRates)/1e9, 100*median(tlsRates)/mr)
	}
	fmt.Println()
	return nil
}

func median(v []float64) float64 {
	sort.Float64s(v)
	return v[len(v)/2]
}

// rawPair is the baseline: one TCP connection on loopback; the sender
// writes the ranges with vectored I/O, the receiver reads them into the
// destination buffer in large reads and acknowledges each batch with one
// byte, as a transfer engine must.
type rawPair struct {
	ln     net.Listener
	client net.Conn
	server net.Conn
	dst    []byte
	req    chan int
	done   chan error
}

func newRawPair(dst []byte) (*rawPair, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	acc := make(chan net.Conn, 1)
	go func() {
		c, _ := ln.Accept()
		acc <- c
	}()
	client, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		return nil, err
	}
	p := &rawPair{ln: ln, client: client, server: <-acc, dst: dst, req: make(chan int), done: make(chan error)}
	go p.serve()
	return p, nil
}

func (p *rawPair) serve() {
	ack := []byte{1}
	for n := range p.req {
		// The receiver knows the batch size out of band and reads it into
		// the destination sequentially: the ideal case for a raw socket.
		_, err := io.ReadFull(p.server, p.dst[:n])
		if err == nil {
			_, err = p.server.Write(ack)
		}
		p.done <- err
	}
}

func (p *rawPair) send(src []byte, ranges []core.Range) error {
	total := 0
	bufs := make(net.Buffers, 0, len(ranges))
	for _, r := range ranges {
		bufs = append(bufs, src[r.LocalOffset:r.LocalOffset+r.Size])
		total += int(r.Size)
	}
	p.req <- total
	if _, err := bufs.WriteTo(p.client); err != nil {
		return err
	}
	var ack [1]byte
	if _, err := io.ReadFull(p.client, ack[:]); err != nil {
		return err
	}
	return <-p.done
}

func (p *rawPair) close() {
	close(p.req)
	p.client.Close()
	p.server.Close()
	p.ln.Close()
}
