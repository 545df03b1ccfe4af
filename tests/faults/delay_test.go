package faults

import (
	"encoding/binary"
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	toxiproxy "github.com/Shopify/toxiproxy/v2"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"
	"github.com/stretchr/testify/require"

	"github.com/mori-go/mori-go/core"
	"github.com/mori-go/mori-go/core/engine"
)

// Delay and jitter: this kernel has no sch_netem, so the data plane runs
// through Toxiproxy (github.com/Shopify/toxiproxy/v2, used as a library),
// whose latency toxic holds every chunk for latency ± jitter in each
// direction, keeping their order.

// newToxiproxy starts a Toxiproxy proxy on loopback in front of upstream
// and adds a latency toxic to both directions.
func newToxiproxy(t *testing.T, upstream string, latencyMS, jitterMS int) *toxiproxy.Proxy {
	t.Helper()
	srv := toxiproxy.NewServer(toxiproxy.NewMetricsContainer(prometheus.NewRegistry()), zerolog.Nop())
	px := toxiproxy.NewProxy(srv, "mori-data", "127.0.0.1:0", upstream)
	require.NoError(t, px.Start())
	t.Cleanup(px.Stop)
	for _, dir := range []string{"upstream", "downstream"} {
		_, err := px.Toxics.AddToxicJson(strings.NewReader(fmt.Sprintf(
			`{"type":"latency","stream":%q,"attributes":{"latency":%d,"jitter":%d}}`, dir, latencyMS, jitterMS)))
		require.NoError(t, err)
	}
	return px
}

// withDataPort returns d with its TCP data port replaced by the one of
// addr (host:port on loopback).
func withDataPort(t *testing.T, d core.EngineDesc, addr string) core.EngineDesc {
	t.Helper()
	_, port, err := net.SplitHostPort(addr)
	require.NoError(t, err)
	var p uint16
	_, err = fmt.Sscan(port, &p)
	require.NoError(t, err)
	d.Backends = append([]core.BackendBlob(nil), d.Backends...)
	for i, b := range d.Backends {
		if b.Type == core.BackendTCP {
			d.Backends[i].Data = binary.LittleEndian.AppendUint16(nil, p)
		}
	}
	return d
}

// TestDelayAndJitter: 50 ms each way, then 50 ± 20 ms each way, on the data
// plane. Batches of writes and reads of 64 KiB: every one succeeds with
// its bytes intact, and none is faster than the round trip the proxy
// imposes (the delay really applied).
func TestDelayAndJitter(t *testing.T) {
	for _, c := range []struct{ latency, jitter int }{{50, 0}, {50, 20}} {
		t.Run(fmt.Sprintf("%d±%dms", c.latency, c.jitter), func(t *testing.T) {
			v := newEnv(t)
			a := v.engine("faults-delay-a")
			b := v.engine("faults-delay-b")
			px := newToxiproxy(t, dataAddr(b.Desc()), c.latency, c.jitter)
			require.NoError(t, a.RegisterRemoteEngine(withDataPort(t, b.Desc(), px.Listen)))
			require.NoError(t, b.RegisterRemoteEngine(a.Desc()))

			const n, size = 16, 64 << 10
			src, dst, back := v.alloc(n*size), v.alloc(n*size), v.alloc(n*size)
			sd, dd, bd := register(t, a, src), register(t, b, dst), register(t, a, back)
			minRTT := time.Duration(2*(c.latency-c.jitter)) * time.Millisecond
			var wlat, rlat []time.Duration
			for round := uint64(0); round < 3; round++ {
				reqs := make([]engine.Request, n)
				for i := range reqs {
					off := uint64(i) * size
					fillPattern(src.Bytes()[off:off+size], 100*round+uint64(i))
					reqs[i] = engine.Request{Local: sd, Remote: dd, Ranges: []core.Range{{LocalOffset: off, RemoteOffset: off, Size: size}}, UID: a.AllocateTransferUID()}
				}
				wlat = append(wlat, runBatch(t, a, core.OpWrite, reqs)...)
				for i := range reqs {
					off := uint64(i) * size
					require.NoError(t, checkPattern(dst.Bytes()[off:off+size], 100*round+uint64(i)), "write %d of round %d", i, round)
					reqs[i] = engine.Request{Local: bd, Remote: dd, Ranges: []core.Range{{LocalOffset: off, RemoteOffset: off, Size: size}}, UID: a.AllocateTransferUID()}
				}
				rlat = append(rlat, runBatch(t, a, core.OpRead, reqs)...)
				for i := range reqs {
					off := uint64(i) * size
					require.NoError(t, checkPattern(back.Bytes()[off:off+size], 100*round+uint64(i)), "read %d of round %d", i, round)
				}
			}
			for _, d := range append(wlat, rlat...) {
				require.GreaterOrEqual(t, d, minRTT, "a transfer ended faster than the proxy's round trip: the delay was not applied")
			}
			t.Logf("%d ± %d ms each way: 3 rounds of %d writes and %d reads of 64 KiB, all intact (%d MiB checked); writes %s; reads %s",
				c.latency, c.jitter, n, n, 2*3*n*size>>20, durStats(wlat), durStats(rlat))
		})
	}
}

// runBatch submits reqs, requires every one to succeed, and returns how
// long each took.
func runBatch(t *testing.T, e *engine.Engine, op core.Op, reqs []engine.Request) []time.Duration {
	t.Helper()
	start := time.Now()
	sts := e.Submit(op, reqs)
	ends := watchEnds(sts)
	require.True(t, ends.wait(transferTimeout+waitSlack), "transfers did not end within their timeout")
	var lat []time.Duration
	for i, at := range ends.times() {
		require.Equal(t, core.StatusSuccess, sts[i].Code(), "%s %d: %s", op, i, sts[i].Message())
		lat = append(lat, at.Sub(start))
	}
	return lat
}
