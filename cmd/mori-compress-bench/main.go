// Command mori-compress-bench measures the TCP data plane's compression
// (transport/compress) on a link: effective GB/s of KV-shaped writes and
// the wire/raw ratio for each mode (off, s2, zstd, auto) and data kind
// (bf16 K/V, fp8 K/V, random bytes), interleaved in one run, each mode's
// speed also given as a ratio to off's.
//
//	mori-compress-bench -role target -listen 10.77.0.2 -info /tmp/t.json
//	mori-compress-bench -role initiator -info /tmp/t.json -label "1 Gb/s"
//	mori-compress-bench -role local -label loopback   (both ends here)
//	mori-compress-bench -role local -rounds 0 -alternate 60 -kinds bf16
//	                    (auto against off only, in one interleaved run)
//
// scripts/compress-bench.sh runs it across two network namespaces joined
// by a veth pair shaped with tc tbf.
package main

import (
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/mori-go/mori-go/core"
	"github.com/mori-go/mori-go/internal/hostmem"
	"github.com/mori-go/mori-go/transport/tcp"
)

// targetInfo is what an initiator needs to reach a target.
type targetInfo struct {
	Key   string `json:"key"`
	Host  string `json:"host"`
	Port  uint16 `json:"port"`
	MemID uint32 `json:"mem_id"`
	Token string `json:"token"`
	Size  uint64 `json:"size"`
}

type options struct {
	role, listen, info, label, out string
	against                        string
	modes, kinds                   []string
	region, batch, rangeSize       int
	inflight, rounds, pairs        int
	alternate, sliceBatches        int
	measure, warm, slice           time.Duration
}

func main() {
	var o options
	var modes, kinds string
	flag.StringVar(&o.role, "role", "local", "target, initiator or local (both ends in this process)")
	flag.StringVar(&o.listen, "listen", "127.0.0.1", "target: address to listen on")
	flag.StringVar(&o.info, "info", "", "file the target writes its address to and the initiator reads")
	flag.StringVar(&o.label, "label", "", "link name for the table")
	flag.StringVar(&o.out, "out", "", "append the markdown rows to this file (default stdout)")
	flag.StringVar(&modes, "modes", "off,s2,zstd,auto", "compression modes")
	flag.StringVar(&kinds, "kinds", "bf16,fp8,random", "data kinds")
	flag.IntVar(&o.region, "region", 64<<20, "bytes of the source and target regions")
	flag.IntVar(&o.batch, "batch", 16<<20, "bytes per transfer")
	flag.IntVar(&o.rangeSize, "range", 64<<10, "bytes per range")
	flag.IntVar(&o.inflight, "inflight", 2, "transfers in flight")
	flag.IntVar(&o.rounds, "rounds", 2, "rounds over all modes (interleaved)")
	flag.IntVar(&o.pairs, "pairs", 0, "then this many adjacent off/auto pairs per kind: the median auto/off ratio")
	flag.IntVar(&o.alternate, "alternate", 0, "then this many pairs of -slice slices per kind, off and auto initiators side by side (interleaved)")
	flag.DurationVar(&o.slice, "slice", 500*time.Millisecond, "time of one slice of -alternate")
	flag.IntVar(&o.sliceBatches, "slice-batches", 0, "batches in one slice of -alternate (instead of -slice)")
	flag.StringVar(&o.against, "against", "auto", "the mode -alternate compares with off (off: a control of the method)")
	flag.DurationVar(&o.measure, "time", 3*time.Second, "time per measurement")
	flag.DurationVar(&o.warm, "warm", 500*time.Millisecond, "warm-up before each measurement")
	flag.Parse()
	o.modes, o.kinds = strings.Split(modes, ","), strings.Split(kinds, ",")
	var err error
	switch o.role {
	case "target":
		err = runTarget(o)
	case "initiator", "local":
		err = runInitiator(o)
	default:
		err = fmt.Errorf("-role %q: want target, initiator or local", o.role)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "mori-compress-bench:", err)
		os.Exit(1)
	}
}

func quietEnv(key, host string) core.BackendEnv {
	return core.BackendEnv{LocalKey: key, Host: host, Registry: core.NewRegistry(), Inbound: core.NewInboundTable(1 << 16),
		Logger: slog.New(slog.DiscardHandler)}
}

// target is a TCP backend that decodes compressed writes into a region.
type target struct {
	b   *tcp.Backend
	mem *hostmem.Buffer
	inf targetInfo
}

func startTarget(host string, size int) (*target, error) {
	env := quietEnv("bench-target", host)
	b, err := tcp.New(tcp.Config{Compression: "zstd"}, env)
	if err != nil {
		return nil, err
	}
	mem, err := hostmem.Alloc(size)
	if err != nil {
		b.Close()
		return nil, err
	}
	r, err := env.Registry.Add(mem.Addr(), uint64(size), core.LocationCPU, -1, true)
	if err != nil {
		b.Close()
		mem.Free()
		return nil, err
	}
	tok := r.Token()
	return &target{b: b, mem: mem, inf: targetInfo{Key: env.LocalKey, Host: host, Port: b.Port(), MemID: r.ID,
		Token: hex.EncodeToString(tok[:]), Size: uint64(size)}}, nil
}

func (t *target) close() {
	t.b.Close()
	t.mem.Free()
}

func runTarget(o options) error {
	t, err := startTarget(o.listen, o.region)
	if err != nil {
		return err
	}
	defer t.close()
	j, _ := json.Marshal(t.inf)
	if err := os.WriteFile(o.info+".tmp", j, 0o644); err != nil {
		return err
	}
	if err := os.Rename(o.info+".tmp", o.info); err != nil {
		return err
	}
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT)
	<-sig
	return nil
}

func readInfo(path string) (targetInfo, error) {
	var inf targetInfo
	deadline := time.Now().Add(30 * time.Second)
	for {
		b, err := os.ReadFile(path)
		if err == nil {
			return inf, json.Unmarshal(b, &inf)
		}
		if time.Now().After(deadline) {
			return inf, fmt.Errorf("no target info at %s: %w", path, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func (inf targetInfo) descs() (core.EngineDesc, core.MemoryDesc, error) {
	var tok core.Token
	b, err := hex.DecodeString(inf.Token)
	if err != nil || len(b) != len(tok) {
		return core.EngineDesc{}, core.MemoryDesc{}, fmt.Errorf("bad token in target info")
	}
	copy(tok[:], b)
	port := binary.LittleEndian.AppendUint16(nil, inf.Port)
	ed := core.EngineDesc{Key: inf.Key, Host: inf.Host, Backends: []core.BackendBlob{{Type: core.BackendTCP, Data: port}}}
	md := core.MemoryDesc{EngineKey: inf.Key, ID: inf.MemID, Token: tok, Location: core.LocationCPU, Size: inf.Size}
	return ed, md, nil
}

// prepare decodes the target's descriptors and allocates the source region
// (o.region bytes); the caller frees it.
func (inf targetInfo) prepare(o options) (core.EngineDesc, core.MemoryDesc, *hostmem.Buffer, error) {
	ed, md, err := inf.descs()
	if err != nil {
		return ed, md, nil, err
	}
	src, err := hostmem.Alloc(o.region)
	return ed, md, src, err
}

func runInitiator(o options) error {
	var inf targetInfo
	if o.role == "local" {
		t, err := startTarget("127.0.0.1", o.region)
		if err != nil {
			return err
		}
		defer t.close()
		inf = t.inf
	} else {
		var err error
		if inf, err = readInfo(o.info); err != nil {
			return err
		}
	}
	out := io.Writer(os.Stdout)
	if o.out != "" {
		f, err := os.OpenFile(o.out, os.O_APPEND|os.O_CREATE|os.O_WRONLY, 0o644)
		if err != nil {
			return err
		}
		defer f.Close()
		out = f
	}
	if o.rounds > 0 {
		res, err := measureAll(o, inf)
		if err != nil {
			return err
		}
		report(out, o, res)
	}
	if o.pairs > 0 {
		if err := pairCheck(out, o, inf); err != nil {
			return err
		}
	}
	if o.alternate > 0 {
		return alternateCheck(out, o, inf)
	}
	return nil
}
