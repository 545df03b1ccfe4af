// Command mori-bench measures mori-go's TCP data plane against a raw TCP
// socket moving the same bytes on the same machine, in one run, and prints
// each figure beside its baseline as a ratio. These machines are noisy: the
// ratio is the figure, not the raw time.
//
//	mori-bench                  the standard table
//	mori-bench -quick           a short smoke run (CI)
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
	if err := run(works, *minTime, *streams); err != nil {
		fmt.Fprintln(os.Stderr, "mori-bench:", err)
		pprof.StopCPUProfile()
		os.Exit(1)
	}
}

func run(works []workload, minTime time.Duration, streams int) error {
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

	a, b, sd, dd, err := enginePair(src, dst, streams)
	if err != nil {
		return err
	}
	defer a.Close()
	defer b.Close()
	raw, err := newRawPair(dst.Bytes())
	if err != nil {
		return err
	}
	defer raw.close()

	fmt.Printf("mori-go TCP data plane vs raw TCP socket, loopback, one process, %d streams per peer\n", a.DataBackend().(interface{ Streams() int }).Streams())
	fmt.Printf("%-16s %12s %12s %8s %14s\n", "workload", "raw GB/s", "mori GB/s", "ratio", "mori ranges/s")
	for _, w := range works {
		if err := measure(w, minTime, raw, a, sd, dd, src, dst); err != nil {
			return err
		}
	}
	return nil
}

// enginePair starts an initiator and a target engine over TCP, the target
// registered with the initiator, src registered with the initiator and dst
// with the target.
func enginePair(src, dst *hostmem.Buffer, streams int) (a, b *engine.Engine, sd, dd core.MemoryDesc, err error) {
	cfg := func(key string) stack.Config {
		c := stack.Config{Config: engine.Config{Key: key}}
		c.TCP.Streams = streams
		return c
	}
	if a, err = stack.New(cfg("bench-initiator")); err != nil {
		return
	}
	if b, err = stack.New(cfg("bench-target")); err != nil {
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
	dd, err = b.RegisterMemory(dst.Addr(), uint64(dst.Len()), -1, core.LocationCPU)
	return
}

// measure runs workload w on the raw socket and the engine, interleaved,
// for at least minTime, and prints the medians.
func measure(w workload, minTime time.Duration, raw *rawPair, a *engine.Engine, sd, dd core.MemoryDesc, src, dst *hostmem.Buffer) error {
	ranges := make([]core.Range, w.ranges)
	for i := range ranges {
		ranges[i] = core.Range{LocalOffset: uint64(i * w.size), RemoteOffset: uint64(2 * i * w.size), Size: uint64(w.size)}
	}
	bytes := float64(w.size * w.ranges)
	// Interleave baseline and engine runs so that drift hits both.
	var rawRates, moriRates []float64
	deadline := time.Now().Add(minTime)
	for len(rawRates) < 3 || time.Now().Before(deadline) {
		t0 := time.Now()
		if err := raw.send(src.Bytes(), ranges); err != nil {
			return err
		}
		rawRates = append(rawRates, bytes/time.Since(t0).Seconds())
		t0 = time.Now()
		st := a.Submit(core.OpWrite, []engine.Request{{Local: sd, Remote: dd, Ranges: ranges, UID: a.AllocateTransferUID()}})
		if c := core.WaitAll(st, time.Minute); c != core.StatusSuccess {
			return fmt.Errorf("%s: %s: %s", w.name, c, st[0].Message())
		}
		moriRates = append(moriRates, bytes/time.Since(t0).Seconds())
	}
	// Spot-check the last transfer.
	for _, i := range []int{0, w.ranges - 1} {
		r := ranges[i]
		if !slices.Equal(src.Bytes()[r.LocalOffset:r.LocalOffset+r.Size], dst.Bytes()[r.RemoteOffset:r.RemoteOffset+r.Size]) {
			return fmt.Errorf("%s: range %d arrived corrupted", w.name, i)
		}
	}
	rr, mr := median(rawRates), median(moriRates)
	fmt.Printf("%-16s %12.2f %12.2f %7.0f%% %14.0f\n", w.name, rr/1e9, mr/1e9, 100*mr/rr, mr/float64(w.size))
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
