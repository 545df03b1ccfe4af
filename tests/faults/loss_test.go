package faults

import (
	"encoding/binary"
	"fmt"
	"os"
	"os/exec"
	"testing"
	"time"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"
)

// Packet loss and rate limits on the veth pair between the namespaces of
// netns_test.go. This kernel has no sch_netem, so loss is an nftables rule
// on the input hook of each namespace, `numgen random mod 100 < N drop`,
// installed over netlink with github.com/google/nftables (no nft binary
// needed); each end drops N % of what it receives, so both directions lose
// N %. The rate limit is tc tbf on both veth ends.

const lossTable = "mori_faults_loss"

// nsLoss is the loss rule installed in one namespace.
type nsLoss struct {
	ns    *os.File // the namespace, open while the rule is in place
	conn  *nftables.Conn
	table *nftables.Table
	chain *nftables.Chain
}

// addLoss makes namespace ns drop pct % of the packets it receives, at
// random. The error says why nftables cannot be used here.
func addLoss(ns string, pct uint32) (*nsLoss, error) {
	f, err := os.Open("/run/netns/" + ns)
	if err != nil {
		return nil, fmt.Errorf("open namespace %s: %w", ns, err)
	}
	c, err := nftables.New(nftables.WithNetNSFd(int(f.Fd())))
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("nftables in %s: %w", ns, err)
	}
	l := &nsLoss{ns: f, conn: c}
	l.table = c.AddTable(&nftables.Table{Family: nftables.TableFamilyINet, Name: lossTable})
	l.chain = c.AddChain(&nftables.Chain{Name: "input", Table: l.table, Type: nftables.ChainTypeFilter,
		Hooknum: nftables.ChainHookInput, Priority: nftables.ChainPriorityFilter})
	// Rule 1 counts every packet received; rule 2 drops pct % of them:
	// numgen random mod 100 (host byte order) turned big-endian so that
	// cmp's byte-wise "less than" compares numbers.
	c.AddRule(&nftables.Rule{Table: l.table, Chain: l.chain, Exprs: []expr.Any{&expr.Counter{}}})
	c.AddRule(&nftables.Rule{Table: l.table, Chain: l.chain, Exprs: []expr.Any{
		&expr.Numgen{Register: 1, Modulus: 100, Type: unix.NFT_NG_RANDOM},
		&expr.Byteorder{SourceRegister: 1, DestRegister: 1, Op: expr.ByteorderHton, Len: 4, Size: 4},
		&expr.Cmp{Op: expr.CmpOpLt, Register: 1, Data: binary.BigEndian.AppendUint32(nil, pct)},
		&expr.Counter{},
		&expr.Verdict{Kind: expr.VerdictDrop},
	}})
	if err := c.Flush(); err != nil {
		f.Close()
		return nil, fmt.Errorf("nftables rule `numgen random mod 100 < %d drop` in %s: %w", pct, ns, err)
	}
	return l, nil
}

// counts returns the packets received and dropped so far.
func (l *nsLoss) counts() (seen, dropped uint64, err error) {
	rules, err := l.conn.GetRules(l.table, l.chain)
	if err != nil {
		return 0, 0, err
	}
	var n []uint64
	for _, r := range rules {
		for _, e := range r.Exprs {
			if c, ok := e.(*expr.Counter); ok {
				n = append(n, c.Packets)
			}
		}
	}
	if len(n) != 2 {
		return 0, 0, fmt.Errorf("%d counters in the loss chain, want 2", len(n))
	}
	return n[0], n[1], nil
}

func (l *nsLoss) remove() {
	l.conn.DelTable(l.table)
	l.conn.Flush()
	l.ns.Close()
}

// TestPacketLoss: 1 %, 5 % and 20 % of the packets dropped each way while
// an initiator writes into a target across the veth pair. Every write
// either succeeds with its bytes intact on the target (and the target's
// inbound status SUCCESS), or fails within its timeout; none succeeds with
// wrong bytes.
func TestPacketLoss(t *testing.T) {
	p := newNetnsPair(t)
	probe, err := addLoss(p.a, 0)
	if err != nil {
		t.Skip("packet-loss tests need nftables (nf_tables with numgen) in a network namespace: ", err)
	}
	probe.remove()
	for _, pct := range []uint32{1, 5, 20} {
		t.Run(fmt.Sprintf("loss %d%%", pct), func(t *testing.T) {
			const n, size = 16, 64 << 10
			target, initiator := p.peers(t, n*size)
			// One MTU-sized segment per packet, as on a NIC: without this
			// the veth carries TCP's 64 KiB segments whole, and a drop
			// costs a whole segment.
			for _, end := range [][2]string{{p.a, p.va}, {p.b, p.vb}} {
				if _, err := run("ip", "-n", end[0], "link", "set", "dev", end[1], "gso_max_segs", "1"); err != nil {
					t.Logf("segments stay large (%v)", err)
				}
			}
			var rules []*nsLoss
			for _, ns := range []string{p.a, p.b} {
				l, err := addLoss(ns, pct)
				require.NoError(t, err)
				rules = append(rules, l)
				t.Cleanup(l.remove)
			}
			checked := 0
			for round := uint64(0); round < 3; round++ {
				seed, uid0 := 1000*(round+1), 100*(round+1)
				res := initiator.call(msg{Cmd: "write", N: n, Size: size, Seed: seed, UID: uid0}, linkTimeout+40*time.Second)
				ok, failed, okT, failT, first := outcome(t, target, res, size, seed, uid0)
				checked += ok * size
				t.Logf("%d%% loss each way, round %d: %d of %d writes of 64 KiB intact (time %s), %d failed within the timeout (%s) %s",
					pct, round, ok, n, durStats(okT), failed, durStats(failT), first)
			}
			for i, l := range rules {
				seen, dropped, err := l.counts()
				require.NoError(t, err)
				require.NotZero(t, seen, "no packet crossed the link")
				t.Logf("namespace %s: %d packets received, %d dropped (%.1f%%); %d bytes checked on the target",
					[]string{"initiator", "target"}[i], seen, dropped, 100*float64(dropped)/float64(seen), checked)
			}
		})
	}
}

// TestRateLimit: the link limited to 40 Mbit/s each way by tc tbf. The
// writes are intact and take about as long as the rate says.
func TestRateLimit(t *testing.T) {
	p := newNetnsPair(t)
	if _, err := exec.LookPath("tc"); err != nil {
		t.Skip("rate-limit test needs iproute2's tc: ", err)
	}
	const n, size = 16, 256 << 10
	target, initiator := p.peers(t, n*size)
	for _, end := range [][2]string{{p.a, p.va}, {p.b, p.vb}} {
		if _, err := run("ip", "netns", "exec", end[0], "tc", "qdisc", "add", "dev", end[1], "root", "tbf", "rate", "40mbit", "burst", "32kb", "latency", "200ms"); err != nil {
			t.Skip("tc tbf unavailable: ", err)
		}
		t.Cleanup(func() { p.tc(end[0], end[1], "del", "root") })
	}
	for round := uint64(0); round < 2; round++ {
		seed, uid0 := 5000*(round+1), 500*(round+1)
		start := time.Now()
		res := initiator.call(msg{Cmd: "write", N: n, Size: size, Seed: seed, UID: uid0}, linkTimeout+40*time.Second)
		took := time.Since(start)
		ok, failed, _, _, first := outcome(t, target, res, size, seed, uid0)
		require.Equal(t, n, ok, "writes failed on a link that is slow but sound: %s", first)
		require.Zero(t, failed)
		t.Logf("40 Mbit/s each way, round %d: %d writes of 256 KiB (4 MiB) intact in %s (%.1f Mbit/s)",
			round, ok, took.Round(time.Millisecond), float64(n*size*8)/took.Seconds()/1e6)
	}
}
