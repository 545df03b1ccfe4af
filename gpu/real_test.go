package gpu_test

// Tests on a real GPU: gpu.Open with zero Options finds libcuda.so.1 or
// libamdhip64.so (MORI_GPU_LIBRARY names another library, such as the
// stand-in, for a dry run). Without a driver or a device they skip. They allocate
// device memory through the driver (AllocDevice), check what the stand-in
// tests check where a real driver makes the same promise, and log copy
// bandwidth (no thresholds).

import (
	"bufio"
	"bytes"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/mori-go/mori-go/gpu"
	"github.com/stretchr/testify/require"
)

// openReal opens the machine's driver, or the library MORI_GPU_LIBRARY
// names (the stand-in, for a dry run of these tests on a CPU machine).
func openReal(tb testing.TB) *gpu.Driver {
	tb.Helper()
	d, err := gpu.Open(gpu.Options{Library: os.Getenv("MORI_GPU_LIBRARY"), Logger: testLogger(tb)})
	if errors.Is(err, gpu.ErrNotSupported) {
		tb.Skipf("no GPU driver in this process: %v", err)
	}
	require.NoError(tb, err)
	tb.Cleanup(func() { require.NoError(tb, d.Close()) })
	return d
}

func TestRealPointerInfo(t *testing.T) {
	d := openReal(t)
	t.Logf("%v driver, %d devices", d.Vendor(), d.DeviceCount())
	for dev := range d.DeviceCount() {
		checkPointerInfo(t, d, dev)
		id, err := d.PCIBusID(dev)
		require.NoError(t, err)
		t.Logf("device %d: PCI %s", dev, id)
	}
}

func TestRealCheckDeviceRange(t *testing.T) {
	d := openReal(t)
	checkDeviceRanges(t, d, 0, false)
}

func TestRealCopies(t *testing.T) {
	d := openReal(t)
	checkCopies(t, d, 0, false)
	checkConcurrentCopies(t, d, 0)

	const n = 256 << 20
	p := allocDevice(t, d, n, 0)
	pageable := make([]byte, n)
	pinned := allocPinned(t, d, n, 0)
	dst := allocDevice(t, d, n, 0)
	logRate := func(what string, f func() error) {
		require.NoError(t, f()) // warm up
		start := time.Now()
		require.NoError(t, f())
		t.Logf("%-28s %8.2f GB/s", what, float64(n)/time.Since(start).Seconds()/1e9)
	}
	logRate("host to device, pageable", func() error { return d.CopyFromHost(p, pageable, 0) })
	logRate("host to device, pinned", func() error { return d.CopyFromHost(p, pinned, 0) })
	logRate("device to host, pageable", func() error { return d.CopyToHost(pageable, p, 0) })
	logRate("device to host, pinned", func() error { return d.CopyToHost(pinned, p, 0) })
	logRate("device to device", func() error { return d.CopyDeviceToDevice(dst, p, n, 0) })
}

func TestRealStager(t *testing.T) {
	d := openReal(t)
	checkStager(t, d, 0, 4<<20)

	const n = 256 << 20
	p := allocDevice(t, d, n, 0)
	s, err := gpu.NewStager(d, 0, 4, 4<<20)
	require.NoError(t, err)
	defer func() { require.NoError(t, s.Close()) }()
	sink := make([]byte, 4<<20)
	start := time.Now()
	require.NoError(t, s.ReadDevice(p, n, func(b []byte) error { copy(sink, b); return nil }))
	t.Logf("Stager.ReadDevice, 4 x 4 MiB slots: %.2f GB/s", float64(n)/time.Since(start).Seconds()/1e9)
	start = time.Now()
	require.NoError(t, s.WriteDevice(p, n, func(b []byte) error { copy(b, sink); return nil }))
	t.Logf("Stager.WriteDevice, 4 x 4 MiB slots: %.2f GB/s", float64(n)/time.Since(start).Seconds()/1e9)
}

func TestRealStagedSpans(t *testing.T) {
	d := openReal(t)
	checkStagedSpans(t, d, 0)
	checkCopyDeviceBatch(t, d, 0)
}

func TestRealDmabuf(t *testing.T) {
	d := openReal(t)
	checkDmabuf(t, d, 0)
}

// TestRealIPC exports device memory and has a child process (this test
// binary, running TestRealIPCChild) open the handle and read it: CUDA and
// HIP refuse to open a handle in the process that exported it.
func TestRealIPC(t *testing.T) {
	d := openReal(t)
	const n, off, length = 1 << 20, 12345, 4096
	data := randomBytes(n, 4)
	p := allocDevice(t, d, n, 0)
	require.NoError(t, d.CopyFromHost(p, data, 0))
	h, gotOff, err := d.IPCExport(p + off)
	require.NoError(t, err)
	require.Equal(t, uint64(off), gotOff)

	cmd := exec.Command(os.Args[0], "-test.run=^TestRealIPCChild$", "-test.v")
	cmd.Env = append(os.Environ(),
		"GPU_IPC_CHILD_HANDLE="+hex.EncodeToString(h[:]),
		"GPU_IPC_CHILD_OFFSET="+strconv.Itoa(off),
		"GPU_IPC_CHILD_LENGTH="+strconv.Itoa(length))
	out, err := cmd.CombinedOutput()
	require.NoError(t, err, "child: %s", out)
	var got, mapped []byte
	sc := bufio.NewScanner(bytes.NewReader(out))
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		if rest, ok := strings.CutPrefix(sc.Text(), "IPC-DATA "); ok {
			got, err = hex.DecodeString(rest)
			require.NoError(t, err)
		}
		if rest, ok := strings.CutPrefix(sc.Text(), "IPC-MAP-DATA "); ok {
			mapped, err = hex.DecodeString(rest)
			require.NoError(t, err)
		}
	}
	require.NotNil(t, got, "child printed no data: %s", out)
	require.True(t, bytes.Equal(data[off:off+length], got), "child read different bytes")
	require.NotNil(t, mapped, "child printed no IPCMap data: %s", out)
	require.True(t, bytes.Equal(data[off:off+length], mapped), "child read different bytes through IPCMap")
}

// TestRealIPCChild is the child half of TestRealIPC.
func TestRealIPCChild(t *testing.T) {
	hs := os.Getenv("GPU_IPC_CHILD_HANDLE")
	if hs == "" {
		t.Skip("helper process for TestRealIPC")
	}
	d := openReal(t)
	raw, err := hex.DecodeString(hs)
	require.NoError(t, err)
	var h gpu.IPCHandle
	require.Len(t, raw, len(h))
	copy(h[:], raw)
	off, err := strconv.Atoi(os.Getenv("GPU_IPC_CHILD_OFFSET"))
	require.NoError(t, err)
	length, err := strconv.Atoi(os.Getenv("GPU_IPC_CHILD_LENGTH"))
	require.NoError(t, err)

	p, closeIPC, err := d.IPCOpen(h, uint64(off), 0)
	require.NoError(t, err)
	buf := make([]byte, length)
	require.NoError(t, d.CopyToHost(buf, p, 0))
	require.NoError(t, closeIPC())
	fmt.Printf("IPC-DATA %s\n", hex.EncodeToString(buf))

	// IPCMap maps the whole allocation; the importer adds the offset.
	base, size, unmap, err := d.IPCMap(h, 0)
	require.NoError(t, err)
	require.GreaterOrEqual(t, size, uint64(off+length))
	dst := allocDevice(t, d, uint64(length), 0)
	require.NoError(t, d.CopyDeviceBatch(0, []gpu.Copy{{Dst: dst, Src: base + uintptr(off), Size: uint64(length)}}))
	require.NoError(t, d.CopyToHost(buf, dst, 0))
	require.NoError(t, unmap())
	fmt.Printf("IPC-MAP-DATA %s\n", hex.EncodeToString(buf))
}
