// Command mori-kvdemo runs a prefill/decode pair on loopback: two engines in
// two processes move a DeepSeek-V3-shaped KV cache (61 layers of MLA
// 576 x bf16 per token, 8192 tokens, in pages of 64 tokens scattered over the
// decode cache) and check it byte for byte, then print what moved and how
// fast.
//
// The parent process plays prefill; it starts itself again as the decode
// process and the two exchange descriptors over the child's stdin and
// stdout, as SGLang's bootstrap server would.
package main

import (
	"bufio"
	"encoding/base64"
	"encoding/binary"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"os"
	"os/exec"
	"slices"
	"strings"
	"time"

	"github.com/mori-go/mori-go/core"
	"github.com/mori-go/mori-go/core/engine"
	"github.com/mori-go/mori-go/internal/hostmem"
	"github.com/mori-go/mori-go/stack"
)

type shape struct {
	Layers, Hidden, Elem, Tokens, Page, Iters int
}

func (s shape) tokenBytes() int { return s.Hidden * s.Elem }
func (s shape) pageBytes() int  { return s.tokenBytes() * s.Page }
func (s shape) pages() int      { return s.Tokens / s.Page }

// decodePages is the page count of the decode cache, larger than one
// request so that placement is scattered.
func (s shape) decodePages() int { return s.pages() + s.pages()/4 }

func main() {
	var s shape
	role := flag.String("role", "prefill", "prefill (runs the demo) or decode (started by prefill)")
	flag.IntVar(&s.Layers, "layers", 61, "layers")
	flag.IntVar(&s.Hidden, "hidden", 576, "KV elements per token per layer (MLA: 512 + 64)")
	flag.IntVar(&s.Elem, "elem-bytes", 2, "bytes per element (bf16: 2)")
	flag.IntVar(&s.Tokens, "tokens", 8192, "tokens in the request")
	flag.IntVar(&s.Page, "page", 64, "tokens per page")
	flag.IntVar(&s.Iters, "iters", 3, "times the request is moved")
	streams := flag.Int("streams", 0, "TCP streams per peer (0: default)")
	verbose := flag.Bool("v", false, "debug logs")
	flag.Parse()
	if s.Tokens%s.Page != 0 {
		fail(fmt.Errorf("tokens (%d) must be a multiple of page (%d)", s.Tokens, s.Page))
	}
	lvl := slog.LevelWarn
	if *verbose {
		lvl = slog.LevelDebug
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: lvl}))
	cfg := stack.Config{Config: engine.Config{Key: *role + fmt.Sprintf("-%d", os.Getpid()), Logger: log}}
	cfg.TCP.Streams = *streams
	var err error
	if *role == "decode" {
		err = decode(s, cfg)
	} else {
		err = prefill(s, cfg)
	}
	if err != nil {
		fail(err)
	}
}

func fail(err error) {
	fmt.Fprintln(os.Stderr, "mori-kvdemo:", err)
	os.Exit(1)
}

// fill writes the deterministic content of page p of layer l.
func fill(b []byte, layer, page int) {
	r := rand.New(rand.NewPCG(uint64(layer), uint64(page)))
	for i := 0; i+8 <= len(b); i += 8 {
		binary.LittleEndian.PutUint64(b[i:], r.Uint64())
	}
}

// placement maps request page i to a decode page, the same in both
// processes for a given iteration.
func placement(s shape, iter int) []int {
	p := rand.New(rand.NewPCG(42, uint64(iter))).Perm(s.decodePages())
	return p[:s.pages()]
}

type node struct {
	e       *engine.Engine
	bufs    []*hostmem.Buffer
	descs   []core.MemoryDesc
	encoded []string
}

func newNode(cfg stack.Config, layers, size int) (*node, error) {
	e, err := stack.New(cfg)
	if err != nil {
		return nil, err
	}
	if _, err := e.CreateBackend(core.BackendRDMA, nil); err != nil {
		return nil, err
	}
	n := &node{e: e}
	for l := 0; l < layers; l++ {
		m, err := hostmem.Alloc(size)
		if err != nil {
			return nil, err
		}
		clear(m.Bytes()) // fault the pages in, as a serving engine's warm cache is
		d, err := e.RegisterMemory(m.Addr(), uint64(size), -1, core.LocationCPU)
		if err != nil {
			return nil, err
		}
		b, _ := d.MarshalBinary()
		n.bufs = append(n.bufs, m)
		n.descs = append(n.descs, d)
		n.encoded = append(n.encoded, base64.StdEncoding.EncodeToString(b))
	}
	return n, nil
}

func (n *node) descLine() string {
	d := n.e.Desc()
	b, _ := d.MarshalBinary()
	return base64.StdEncoding.EncodeToString(b) + " " + strings.Join(n.encoded, " ")
}

func parseLine(line string) (core.EngineDesc, []core.MemoryDesc, error) {
	var ed core.EngineDesc
	f := strings.Fields(line)
	if len(f) == 0 {
		return ed, nil, fmt.Errorf("empty descriptor line")
	}
	b, err := base64.StdEncoding.DecodeString(f[0])
	if err == nil {
		err = ed.UnmarshalBinary(b)
	}
	if err != nil {
		return ed, nil, err
	}
	var mds []core.MemoryDesc
	for _, x := range f[1:] {
		var md core.MemoryDesc
		b, err := base64.StdEncoding.DecodeString(x)
		if err == nil {
			err = md.UnmarshalBinary(b)
		}
		if err != nil {
			return ed, nil, err
		}
		mds = append(mds, md)
	}
	return ed, mds, nil
}

// decode serves as the decode side: it prints its descriptors, registers
// prefill, and checks each iteration's pages when told.
func decode(s shape, cfg stack.Config) error {
	n, err := newNode(cfg, s.Layers, s.decodePages()*s.pageBytes())
	if err != nil {
		return err
	}
	defer n.e.Close()
	fmt.Println(n.descLine())
	in := bufio.NewScanner(os.Stdin)
	in.Buffer(make([]byte, 1<<20), 1<<20)
	if !in.Scan() {
		return fmt.Errorf("no prefill descriptor on stdin")
	}
	ed, _, err := parseLine(in.Text())
	if err != nil {
		return err
	}
	if err := n.e.RegisterRemoteEngine(ed); err != nil {
		return err
	}
	fmt.Println("ready")
	want := make([]byte, s.pageBytes())
	for in.Scan() {
		var iter int
		var uids []uint64
		f := strings.Fields(in.Text())
		if len(f) == 0 || f[0] != "check" {
			continue
		}
		fmt.Sscan(f[1], &iter)
		for _, u := range f[2:] {
			var v uint64
			fmt.Sscan(u, &v)
			uids = append(uids, v)
		}
		bad := 0
		for l := 0; l < s.Layers; l++ {
			for i, dp := range placement(s, iter) {
				fill(want, l, i)
				got := n.bufs[l].Bytes()[dp*s.pageBytes() : (dp+1)*s.pageBytes()]
				if !slices.Equal(got, want) {
					bad++
				}
			}
		}
		inbound := 0
		for _, u := range uids {
			if st, ok := n.e.PopInboundTransferStatus(ed.Key, u); ok && st.Code == core.StatusSuccess {
				inbound++
			}
		}
		// Scrub so the next iteration is checked afresh.
		for _, b := range n.bufs {
			clear(b.Bytes())
		}
		fmt.Printf("checked %d %d %d\n", iter, bad, inbound)
	}
	return nil
}

// decodeChild is the decode process the prefill side starts and talks to
// over its standard input and output, one line at a time.
type decodeChild struct {
	cmd  *exec.Cmd
	to   io.WriteCloser
	from *bufio.Scanner
}

// startDecode starts this program again as the decode side, with the same
// flags.
func startDecode() (*decodeChild, error) {
	self, err := os.Executable()
	if err != nil {
		return nil, err
	}
	args := []string{"-role", "decode"}
	flag.Visit(func(f *flag.Flag) {
		if f.Name != "role" {
			args = append(args, "-"+f.Name+"="+f.Value.String())
		}
	})
	child := exec.Command(self, args...)
	child.Stderr = os.Stderr
	toChild, _ := child.StdinPipe()
	fromChild, _ := child.StdoutPipe()
	if err := child.Start(); err != nil {
		return nil, err
	}
	out := bufio.NewScanner(fromChild)
	out.Buffer(make([]byte, 1<<20), 1<<20)
	return &decodeChild{cmd: child, to: toChild, from: out}, nil
}

// next reads the decode side's next line.
func (c *decodeChild) next() (string, error) {
	if !c.from.Scan() {
		return "", fmt.Errorf("decode process ended early: %v", c.from.Err())
	}
	return c.from.Text(), nil
}

func (c *decodeChild) stop() {
	c.to.Close()
	c.cmd.Wait()
}

func prefill(s shape, cfg stack.Config) error {
	child, err := startDecode()
	if err != nil {
		return err
	}
	defer child.stop()
	n, err := newNode(cfg, s.Layers, s.pages()*s.pageBytes())
	if err != nil {
		return err
	}
	defer n.e.Close()
	for l := 0; l < s.Layers; l++ {
		for p := 0; p < s.pages(); p++ {
			fill(n.bufs[l].Bytes()[p*s.pageBytes():(p+1)*s.pageBytes()], l, p)
		}
	}
	_, dst, err := connect(s, n, child)
	if err != nil {
		return err
	}
	var rates []float64
	for it := 0; it < s.Iters; it++ {
		rate, err := iterate(s, n, child, dst, it)
		if err != nil {
			return err
		}
		rates = append(rates, rate)
	}
	slices.Sort(rates)
	fmt.Printf("result: median %.2f GB/s over %d iterations; every byte checked\n", rates[len(rates)/2], len(rates))
	return nil
}

// connect reads the decode side's descriptors, registers it, sends this
// side's and waits for it to be ready.
func connect(s shape, n *node, child *decodeChild) (core.EngineDesc, []core.MemoryDesc, error) {
	line, err := child.next()
	if err != nil {
		return core.EngineDesc{}, nil, err
	}
	ed, dst, err := parseLine(line)
	if err != nil {
		return ed, nil, err
	}
	if len(dst) != s.Layers {
		return ed, nil, fmt.Errorf("decode registered %d layers, want %d", len(dst), s.Layers)
	}
	t0 := time.Now()
	if err := n.e.RegisterRemoteEngine(ed); err != nil {
		return ed, nil, err
	}
	fmt.Fprintln(child.to, n.descLine())
	if l, err := child.next(); err != nil || l != "ready" {
		return ed, nil, fmt.Errorf("decode not ready: %q %v", l, err)
	}
	setup := time.Since(t0)
	total := uint64(s.Layers * s.Tokens * s.tokenBytes())
	fmt.Printf("mori-go KV demo: prefill %s -> decode %s on loopback, data plane %s\n", n.e.Key(), ed.Key, n.e.DataBackend().Type())
	fmt.Printf("request: %d layers x %d tokens x %d x %d B (MLA, bf16) = %.1f MiB in %d pages of %d tokens per layer, scattered over the decode cache\n",
		s.Layers, s.Tokens, s.Hidden, s.Elem, float64(total)/(1<<20), s.pages(), s.Page)
	fmt.Printf("connection set-up (register_remote_engine both ways): %s\n", setup.Round(time.Microsecond))
	return ed, dst, nil
}

// iterate writes every layer once, to pages placed anew, has the decode
// side check them and returns the rate in GB/s.
func iterate(s shape, n *node, child *decodeChild, dst []core.MemoryDesc, it int) (float64, error) {
	total := uint64(s.Layers * s.Tokens * s.tokenBytes())
	place := placement(s, it)
	reqs := make([]engine.Request, s.Layers)
	uids := make([]string, s.Layers)
	for l := range reqs {
		rs := make([]core.Range, s.pages())
		for i, dp := range place {
			rs[i] = core.Range{LocalOffset: uint64(i * s.pageBytes()), RemoteOffset: uint64(dp * s.pageBytes()), Size: uint64(s.pageBytes())}
		}
		uid := n.e.AllocateTransferUID()
		uids[l] = fmt.Sprint(uid)
		reqs[l] = engine.Request{Local: n.descs[l], Remote: dst[l], Ranges: rs, UID: uid}
	}
	start := time.Now()
	sts := n.e.Submit(core.OpWrite, reqs)
	code := core.WaitAll(sts, 2*time.Minute)
	el := time.Since(start)
	if code != core.StatusSuccess {
		for _, st := range sts {
			if st.Code().Failed() {
				return 0, fmt.Errorf("iteration %d: %s: %s", it, st.Code(), st.Message())
			}
		}
		return 0, fmt.Errorf("iteration %d: %s", it, code)
	}
	fmt.Fprintf(child.to, "check %d %s\n", it, strings.Join(uids, " "))
	res, err := child.next()
	if err != nil {
		return 0, err
	}
	var gi, bad, inbound int
	fmt.Sscanf(res, "checked %d %d %d", &gi, &bad, &inbound)
	if bad != 0 {
		return 0, fmt.Errorf("iteration %d: %d pages differ on decode", it, bad)
	}
	rate := float64(total) / el.Seconds() / 1e9
	fmt.Printf("iteration %d: %d transfers (one per layer), %d ranges, %.1f MiB in %s = %.2f GB/s; decode checked %d pages byte for byte: all intact; inbound SUCCESS for %d/%d uids\n",
		it, s.Layers, s.Layers*s.pages(), float64(total)/(1<<20), el.Round(time.Microsecond), rate, s.Layers*s.pages(), inbound, s.Layers)
	return rate, nil
}
