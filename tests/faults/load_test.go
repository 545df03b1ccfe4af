package faults

import (
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/mori-go/mori-go/core"
	"github.com/mori-go/mori-go/core/engine"
	"github.com/mori-go/mori-go/internal/hostmem"
)

// TestLoad64PeersX1000: one initiator (a prefill engine) writes to 64 target
// engines at once, 1000 transfers in flight to each (64,000 in all), on
// loopback, with 2 TCP streams per peer to bound descriptors. Every transfer
// must succeed with its bytes intact and the target's inbound status
// SUCCESS; the process's heap, goroutines and descriptors must stay bounded
// (not grow with the number of transfers) and come back near where they
// started once the engines are closed.
func TestLoad64PeersX1000(t *testing.T) {
	const (
		peers   = 64
		perPeer = 1000
		size    = 2 << 10 // bytes per transfer; each peer's region holds perPeer of them
		streams = 2
	)
	if testing.Short() {
		t.Skip("load test skipped in -short mode")
	}
	before := settled(0, 0)

	var bufs []*hostmem.Buffer
	var engines []*engine.Engine
	cleanup := func() {
		for _, e := range engines {
			e.Close()
		}
		engines = nil
		for _, b := range bufs {
			b.Free()
		}
		bufs = nil
	}
	t.Cleanup(cleanup)
	mem := func(n int) *hostmem.Buffer {
		b, err := hostmem.Alloc(n)
		require.NoError(t, err)
		bufs = append(bufs, b)
		return b
	}
	start := time.Now()
	a, err := startEngine(baseConfig("load-prefill", withStreams(streams), withTimeout(60*time.Second)))
	require.NoError(t, err)
	engines = append(engines, a)
	src := mem(perPeer * size)
	fillPattern(src.Bytes(), 42)
	sd := register(t, a, src)
	targets := make([]*engine.Engine, peers)
	dsts := make([]*hostmem.Buffer, peers)
	dds := make([]core.MemoryDesc, peers)
	for i := range targets {
		targets[i], err = startEngine(baseConfig(fmt.Sprintf("load-decode-%02d", i), withStreams(streams)))
		require.NoError(t, err)
		engines = append(engines, targets[i])
		dsts[i] = mem(perPeer * size)
		dds[i] = register(t, targets[i], dsts[i])
		require.NoError(t, a.RegisterRemoteEngine(targets[i].Desc()))
	}
	setup := time.Since(start)
	up := sample()

	// Peer p's transfer i writes source block (i+p) mod perPeer into its
	// block i, so that every peer holds a different arrangement.
	peak := startPeakSampler(20 * time.Millisecond)
	start = time.Now()
	sts := make([][]*core.Status, peers)
	var wg sync.WaitGroup
	for p := range peers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			reqs := make([]engine.Request, perPeer)
			for i := range reqs {
				reqs[i] = engine.Request{Local: sd, Remote: dds[p], UID: uint64(i + 1), Ranges: []core.Range{{
					LocalOffset: uint64((i+p)%perPeer) * size, RemoteOffset: uint64(i) * size, Size: size}}}
			}
			sts[p] = a.Submit(core.OpWrite, reqs)
		}()
	}
	wg.Wait()
	submitted := time.Since(start)
	for p := range peers {
		c := core.WaitAll(sts[p], 60*time.Second)
		require.Equal(t, core.StatusSuccess, c, "peer %d: %s", p, firstFailure(sts[p]))
	}
	elapsed := time.Since(start)
	pk := peak.finish()

	for p := range peers {
		for i := range perPeer {
			lo := ((i + p) % perPeer) * size
			got := dsts[p].Bytes()[i*size : (i+1)*size]
			require.Equal(t, src.Bytes()[lo:lo+size], got, "peer %d transfer %d: bytes differ", p, i)
			in, ok := targets[p].PopInboundTransferStatus(a.Key(), uint64(i+1))
			require.True(t, ok && in.Code == core.StatusSuccess, "peer %d uid %d: inbound %v %s", p, i+1, in.Code, in.Message)
		}
	}
	require.Zero(t, a.InFlight())
	sts = nil
	busy := settled(0, 0)

	cleanup()
	after := settled(before.Goroutines+2, 10*time.Second)

	total := peers * perPeer
	t.Logf("%d peers x %d concurrent writes of %d B = %d transfers, %d streams per peer: set-up %s, Submit of all %s, all done in %s (%.0f transfers/s, %.1f MiB/s)",
		peers, perPeer, size, total, streams, setup.Round(time.Millisecond), submitted.Round(time.Millisecond), elapsed.Round(time.Millisecond),
		float64(total)/elapsed.Seconds(), float64(total*size)/(1<<20)/elapsed.Seconds())
	t.Logf("before:          %s", before)
	t.Logf("engines up:      %s", up)
	t.Logf("peak under load: %s", pk)
	t.Logf("after the load:  %s", busy)
	t.Logf("engines closed:  %s", after)

	// Bounded: nothing per transfer survives the load, and the goroutines
	// are per stream, not per transfer.
	require.Less(t, pk.Goroutines, up.Goroutines+peers*streams*4+200, "goroutines grew with the transfers")
	require.Less(t, busy.HeapInuse, up.HeapInuse+32<<20,
		"the engines keep %s of heap after the load (frames of the last batch held by each stream's writer)", mib(busy.HeapInuse-up.HeapInuse))
	// Back near the start once the engines are closed.
	require.LessOrEqual(t, after.Goroutines, before.Goroutines+2, "goroutines left behind")
	require.LessOrEqual(t, after.FDs, before.FDs+2, "descriptors left behind")
	require.Less(t, after.HeapInuse, before.HeapInuse+16<<20, "heap did not come back: %s", mib(after.HeapInuse-before.HeapInuse))
}

func firstFailure(sts []*core.Status) string {
	for i, s := range sts {
		if s.Code() != core.StatusSuccess {
			return fmt.Sprintf("transfer %d: %s %s", i, s.Code(), s.Message())
		}
	}
	return ""
}
