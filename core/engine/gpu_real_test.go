package engine_test

// The engine's GPU paths on a real GPU: gpu.Open with zero Options finds
// libcuda.so.1 or libamdhip64.so; without a driver or a device every test
// and benchmark here skips (see openRealGPU for a dry run on a CPU). gpu/testdata/run-on-gpu.sh runs them from test
// binaries built elsewhere with `go test -c` and turns the benchmarks into
// the ratios the targets are stated in:
//
//   - BenchmarkGPUTCP: GPU memory to GPU memory over the TCP backend
//     (staged through page-locked rings, copies overlapped with the
//     network) against host memory to host memory over the same engines,
//     same sizes, same run. Target: gpu >= 80% of host.
//   - BenchmarkGPUIPC: the same-host path (a child process's GPU memory,
//     mapped by CUDA/HIP IPC) against the driver's own device-to-device
//     copy in this process, same sizes, same run. Target: >= 90%.
//
// No test here asserts a timing.

import (
	"bufio"
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/mori-go/mori-go/core"
	"github.com/mori-go/mori-go/core/engine"
	"github.com/mori-go/mori-go/gpu"
	"github.com/mori-go/mori-go/internal/hostmem"
	"github.com/mori-go/mori-go/stack"
)

// envInt reads a positive integer setting, or returns def.
func envInt(tb testing.TB, name string, def int) int {
	v := os.Getenv(name)
	if v == "" {
		return def
	}
	n, err := strconv.Atoi(v)
	require.NoError(tb, err, "%s", name)
	require.Positive(tb, n, "%s", name)
	return n
}

// openRealGPU opens the machine's GPU driver, or skips. MORI_GPU_LIBRARY
// names another driver library instead (the stand-in, built with a large
// -DARENA, runs all of this file on a CPU machine as a dry run). The
// staging ring can be set with MORI_GPU_STAGING_SLOTS and
// MORI_GPU_STAGING_SLOT_KIB.
func openRealGPU(tb testing.TB) *gpu.Driver {
	tb.Helper()
	d, err := gpu.Open(gpu.Options{
		Library:         os.Getenv("MORI_GPU_LIBRARY"),
		StagingSlots:    envInt(tb, "MORI_GPU_STAGING_SLOTS", gpu.DefaultStagingSlots),
		StagingSlotSize: envInt(tb, "MORI_GPU_STAGING_SLOT_KIB", gpu.DefaultStagingSlotSize>>10) << 10,
	})
	if errors.Is(err, gpu.ErrNotSupported) {
		tb.Skipf("no GPU driver in this process: %v", err)
	}
	require.NoError(tb, err)
	tb.Cleanup(func() { require.NoError(tb, d.Close()) })
	return d
}

func realAlloc(tb testing.TB, d *gpu.Driver, n uint64, device int) uintptr {
	tb.Helper()
	p, err := d.AllocDevice(n, device)
	require.NoError(tb, err)
	tb.Cleanup(func() { require.NoError(tb, d.FreeDevice(p)) })
	return p
}

// realEngine is an engine on node with driver d and a TCP data plane.
func realEngine(tb testing.TB, key, node string, d *gpu.Driver) *engine.Engine {
	tb.Helper()
	e, err := stack.New(stack.Config{Config: engine.Config{Key: key, NodeID: node, GPU: d, TransferTimeout: 60 * time.Second}})
	require.NoError(tb, err)
	tb.Cleanup(func() { require.NoError(tb, e.Close()) })
	_, err = e.CreateBackend(core.BackendTCP, nil)
	require.NoError(tb, err)
	return e
}

// pattern returns n bytes: a random block of up to 1 MiB repeated, cheap
// to make for GiBs.
func pattern(n uint64) []byte {
	block := make([]byte, min(n, 1<<20))
	rand.Read(block)
	out := make([]byte, n)
	for i := uint64(0); i < n; i += uint64(len(block)) {
		copy(out[i:], block)
	}
	return out
}

func deviceBytes(tb testing.TB, d *gpu.Driver, p uintptr, n uint64, device int) []byte {
	tb.Helper()
	b := make([]byte, n)
	require.NoError(tb, d.CopyToHost(b, p, device))
	return b
}

func submitWait(tb testing.TB, e *engine.Engine, op core.Op, reqs []engine.Request) {
	tb.Helper()
	for i := range reqs {
		reqs[i].UID = e.AllocateTransferUID()
	}
	for _, st := range e.Submit(op, reqs) {
		require.Equal(tb, core.StatusSuccess, st.Wait(60*time.Second), st.Message())
	}
}

// TestRealGPUOverTCP moves GPU memory between two engines on different
// nodes (so over TCP, through the staging rings), from device 0 to the
// last device.
func TestRealGPUOverTCP(t *testing.T) {
	d := openRealGPU(t)
	other := d.DeviceCount() - 1
	a := realEngine(t, "real-tcp-a", "node-a", d)
	b := realEngine(t, "real-tcp-b", "node-b", d)
	require.NoError(t, a.RegisterRemoteEngine(b.Desc()))
	const n = 64<<20 + 4096
	data := pattern(n)
	src, dst, back := realAlloc(t, d, n, 0), realAlloc(t, d, n, other), realAlloc(t, d, n, 0)
	require.NoError(t, d.CopyFromHost(src, data, 0))
	require.NoError(t, d.CopyFromHost(dst, make([]byte, n), other))
	sd := registerGPU(t, a, src, n, 0)
	dd := registerGPU(t, b, dst, n, other)
	bd := registerGPU(t, a, back, n, 0)
	ranges := append(gpuRanges(n), core.Range{LocalOffset: 8 << 20, RemoteOffset: 16 << 20, Size: 40 << 20})

	submitWait(t, a, core.OpWrite, []engine.Request{{Local: sd, Remote: dd, Ranges: cloneRanges(ranges)}})
	sameRanges(t, data, deviceBytes(t, d, dst, n, other), ranges)
	submitWait(t, a, core.OpRead, []engine.Request{{Local: bd, Remote: dd, Ranges: cloneRanges(ranges)}})
	sameRanges(t, deviceBytes(t, d, back, n, 0), deviceBytes(t, d, dst, n, other), ranges)
	require.Zero(t, ipcStats(a).Transfers)
}

// TestRealGPUSameProcess: two engines of one node in one process. CUDA
// refuses to open IPC handles in the process that exported them, so the
// transfer falls back to TCP there; either way the bytes arrive.
func TestRealGPUSameProcess(t *testing.T) {
	d := openRealGPU(t)
	a := realEngine(t, "real-proc-a", "node", d)
	b := realEngine(t, "real-proc-b", "node", d)
	require.NoError(t, a.RegisterRemoteEngine(b.Desc()))
	const n = 8 << 20
	data := pattern(n)
	src, dst := realAlloc(t, d, n, 0), realAlloc(t, d, n, 0)
	require.NoError(t, d.CopyFromHost(src, data, 0))
	sd, dd := registerGPU(t, a, src, n, 0), registerGPU(t, b, dst, n, 0)
	submitWait(t, a, core.OpWrite, []engine.Request{{Local: sd, Remote: dd, Ranges: []core.Range{{Size: n}}}})
	require.True(t, bytes.Equal(data, deviceBytes(t, d, dst, n, 0)))
	t.Logf("%v driver: same-process transfer took %+v", d.Vendor(), ipcStats(a))
}

// ipcChild is an engine in a child process (this test binary, running
// TestRealGPUIPCChild) on the same node, with n bytes of GPU memory of
// device 0 registered and filled with pattern data it also prints.
type ipcChild struct {
	engine core.EngineDesc
	mem    core.MemoryDesc
	block  []byte // the memory holds this, repeated
	stdin  io.WriteCloser
	done   chan error
	out    *syncBuffer
	once   sync.Once
}

func startIPCChild(tb testing.TB, node string, n uint64) *ipcChild {
	tb.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^TestRealGPUIPCChild$", "-test.v", "-test.count=1")
	cmd.Env = append(os.Environ(), "MORI_GPU_IPC_CHILD=1", "MORI_GPU_IPC_CHILD_NODE="+node,
		"MORI_GPU_IPC_CHILD_BYTES="+strconv.FormatUint(n, 10))
	stdin, err := cmd.StdinPipe()
	require.NoError(tb, err)
	stdout, err := cmd.StdoutPipe()
	require.NoError(tb, err)
	c := &ipcChild{stdin: stdin, done: make(chan error, 1), out: &syncBuffer{}}
	cmd.Stderr = c.out
	require.NoError(tb, cmd.Start())
	ready := make(chan error, 1)
	go func() {
		sc := bufio.NewScanner(stdout)
		sc.Buffer(nil, 4<<20)
		var got int
		for sc.Scan() {
			line := sc.Text()
			fmt.Fprintln(c.out, line)
			field := func(prefix string, into interface{ UnmarshalBinary([]byte) error }) {
				if rest, ok := strings.CutPrefix(line, prefix); ok {
					b, err := hex.DecodeString(rest)
					if err == nil {
						err = into.UnmarshalBinary(b)
					}
					if err != nil {
						ready <- err
					}
					if got++; got == 3 {
						ready <- nil
					}
				}
			}
			field("CHILD-ENGINE ", &c.engine)
			field("CHILD-MEMORY ", &c.mem)
			if rest, ok := strings.CutPrefix(line, "CHILD-BLOCK "); ok {
				c.block, _ = hex.DecodeString(rest)
				if got++; got == 3 {
					ready <- nil
				}
			}
		}
		ready <- fmt.Errorf("child output ended")
		c.done <- cmd.Wait()
	}()
	select {
	case err := <-ready:
		require.NoError(tb, err, "child: %s", c.out)
	case <-time.After(2 * time.Minute):
		_ = cmd.Process.Kill()
		tb.Fatalf("child not ready after 2 minutes: %s", c.out)
	}
	tb.Cleanup(func() { c.stop(tb) })
	return c
}

// stop lets the child deregister its memory (which unmaps it here) and
// exit.
func (c *ipcChild) stop(tb testing.TB) {
	c.once.Do(func() {
		c.stdin.Close()
		select {
		case err := <-c.done:
			require.NoError(tb, err, "child: %s", c.out)
		case <-time.After(time.Minute):
			tb.Errorf("child did not exit: %s", c.out)
		}
	})
}

// TestRealGPUIPCChild is the child half of the same-host tests and
// benchmarks.
func TestRealGPUIPCChild(t *testing.T) {
	if os.Getenv("MORI_GPU_IPC_CHILD") == "" {
		t.Skip("helper process for the same-host GPU tests and benchmarks")
	}
	d := openRealGPU(t)
	n, err := strconv.ParseUint(os.Getenv("MORI_GPU_IPC_CHILD_BYTES"), 10, 64)
	require.NoError(t, err)
	e := realEngine(t, "real-ipc-child", os.Getenv("MORI_GPU_IPC_CHILD_NODE"), d)
	p := realAlloc(t, d, n, 0)
	block := pattern(64 << 10)
	for off := uint64(0); off < n; off += uint64(len(block)) {
		require.NoError(t, d.CopyFromHost(p+uintptr(off), block[:min(uint64(len(block)), n-off)], 0))
	}
	md := registerGPU(t, e, p, int(n), 0)
	require.NotNil(t, md.Blob(core.BackendXGMI), "the memory is exported")
	ed := e.Desc()
	eb, err := ed.MarshalBinary()
	require.NoError(t, err)
	mb, err := md.MarshalBinary()
	require.NoError(t, err)
	fmt.Printf("CHILD-BLOCK %s\nCHILD-ENGINE %s\nCHILD-MEMORY %s\n", hex.EncodeToString(block), hex.EncodeToString(eb), hex.EncodeToString(mb))
	_, _ = io.Copy(io.Discard, os.Stdin) // the parent closes stdin when done
	require.NoError(t, e.DeregisterMemory(md))
}

// TestRealGPUSameHostIPC moves GPU memory between this process and a
// child on the same node through the same-host path, both ways.
func TestRealGPUSameHostIPC(t *testing.T) {
	d := openRealGPU(t)
	a := realEngine(t, "real-ipc-parent", "real-node", d)
	const n = 64<<20 + 4096
	c := startIPCChild(t, "real-node", n)
	require.NoError(t, a.RegisterRemoteEngine(c.engine))
	src, back := realAlloc(t, d, n, 0), realAlloc(t, d, n, 0)
	sd, bd := registerGPU(t, a, src, n, 0), registerGPU(t, a, back, n, 0)

	// Read what the child wrote.
	submitWait(t, a, core.OpRead, []engine.Request{{Local: bd, Remote: c.mem, Ranges: []core.Range{{Size: n}}}})
	got := deviceBytes(t, d, back, n, 0)
	for off := uint64(0); off < n; off += uint64(len(c.block)) {
		require.True(t, bytes.Equal(c.block[:min(uint64(len(c.block)), n-off)], got[off:min(off+uint64(len(c.block)), n)]), "offset %d", off)
	}
	// Write, read back, compare.
	data := pattern(n)
	require.NoError(t, d.CopyFromHost(src, data, 0))
	ranges := append(gpuRanges(n), core.Range{LocalOffset: 8 << 20, RemoteOffset: 16 << 20, Size: 40 << 20})
	submitWait(t, a, core.OpWrite, []engine.Request{{Local: sd, Remote: c.mem, Ranges: cloneRanges(ranges)}})
	require.NoError(t, d.CopyFromHost(back, make([]byte, n), 0))
	submitWait(t, a, core.OpRead, []engine.Request{{Local: bd, Remote: c.mem, Ranges: cloneRanges(ranges)}})
	got = deviceBytes(t, d, back, n, 0)
	for i, r := range ranges {
		require.True(t, bytes.Equal(data[r.LocalOffset:r.LocalOffset+r.Size], got[r.LocalOffset:r.LocalOffset+r.Size]), "range %d differs", i)
	}

	st := ipcStats(a)
	t.Logf("same-host path: %+v", st)
	require.Equal(t, uint64(3), st.Transfers, "all three transfers took the same-host path")
	require.Zero(t, st.Fallbacks)
	require.Equal(t, 1, st.Mappings)
	c.stop(t)
	require.Zero(t, ipcStats(a).Mappings, "the child's deregistration unmapped its memory here")
}

// BenchmarkGPUTCP: engine transfers over TCP between two engines of this
// process on different nodes, GPU memory to GPU memory (device 0) and, as
// the baseline, host memory to host memory. Bytes per transfer:
// MORI_BENCH_TCP_MIB (default 256).
func BenchmarkGPUTCP(b *testing.B) {
	d := openRealGPU(b)
	n := uint64(envInt(b, "MORI_BENCH_TCP_MIB", 256)) << 20
	a := realEngine(b, "bench-tcp-a", "node-a", d)
	t := realEngine(b, "bench-tcp-b", "node-b", d)
	require.NoError(b, a.RegisterRemoteEngine(t.Desc()))
	mem := map[string][2]core.MemoryDesc{}
	var hosts []*hostmem.Buffer
	for range 2 {
		h, err := hostmem.Alloc(int(n))
		require.NoError(b, err)
		hosts = append(hosts, h)
	}
	b.Cleanup(func() {
		for _, h := range hosts {
			h.Free()
		}
	})
	hs, err := a.RegisterMemory(hosts[0].Addr(), n, -1, core.LocationCPU)
	require.NoError(b, err)
	ht, err := t.RegisterMemory(hosts[1].Addr(), n, -1, core.LocationCPU)
	require.NoError(b, err)
	mem["host"] = [2]core.MemoryDesc{hs, ht}
	mem["gpu"] = [2]core.MemoryDesc{registerGPU(b, a, realAlloc(b, d, n, 0), int(n), 0), registerGPU(b, t, realAlloc(b, d, n, 0), int(n), 0)}
	for _, op := range []core.Op{core.OpWrite, core.OpRead} {
		for _, kind := range []string{"host", "gpu"} {
			b.Run(fmt.Sprintf("%s/%s", op, kind), func(b *testing.B) {
				b.SetBytes(int64(n))
				// Untimed: the first transfer sets up staging rings.
				submitWait(b, a, op, []engine.Request{{Local: mem[kind][0], Remote: mem[kind][1], Ranges: []core.Range{{Size: n}}}})
				for b.Loop() {
					submitWait(b, a, op, []engine.Request{{Local: mem[kind][0], Remote: mem[kind][1], Ranges: []core.Range{{Size: n}}}})
				}
			})
		}
	}
	require.Zero(b, ipcStats(a).Transfers)
}

// BenchmarkGPUIPC: the same-host path, this process's GPU memory to and
// from a child process's (both device 0), each operation MORI_BENCH_IPC_MIB
// (default 1024) MiB as 8 transfers submitted together; and, as the
// baseline, the driver's own device-to-device copy of as many bytes in this
// process.
func BenchmarkGPUIPC(b *testing.B) {
	d := openRealGPU(b)
	n := uint64(envInt(b, "MORI_BENCH_IPC_MIB", 1024)) << 20
	const parts = 8
	a := realEngine(b, "bench-ipc-parent", "bench-node", d)
	c := startIPCChild(b, "bench-node", n)
	require.NoError(b, a.RegisterRemoteEngine(c.engine))
	src, dst := realAlloc(b, d, n, 0), realAlloc(b, d, n, 0)
	sd := registerGPU(b, a, src, int(n), 0)
	reqs := func() []engine.Request {
		rs := make([]engine.Request, parts)
		for i := range rs {
			off := uint64(i) * (n / parts)
			rs[i] = engine.Request{Local: sd, Remote: c.mem, Ranges: []core.Range{{LocalOffset: off, RemoteOffset: off, Size: n / parts}}}
		}
		return rs
	}
	b.Run("driver-d2d", func(b *testing.B) {
		b.SetBytes(int64(n))
		require.NoError(b, d.CopyDeviceToDevice(dst, src, n, 0)) // untimed warm-up
		for b.Loop() {
			require.NoError(b, d.CopyDeviceToDevice(dst, src, n, 0))
		}
	})
	for _, op := range []core.Op{core.OpWrite, core.OpRead} {
		b.Run("engine-"+op.String(), func(b *testing.B) {
			b.SetBytes(int64(n))
			// Untimed: the first transfer opens and maps the remote memory.
			submitWait(b, a, op, reqs())
			for b.Loop() {
				submitWait(b, a, op, reqs())
			}
		})
	}
	st := ipcStats(a)
	if st.Fallbacks > 0 || st.Transfers == 0 {
		b.Fatalf("the same-host path was not used: %+v", st)
	}
}
