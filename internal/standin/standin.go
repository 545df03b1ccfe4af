// Package standin builds the stand-in GPU driver for tests: the C library
// in gpu/testdata/standin/standin.c, which implements the CUDA driver API
// and HIP runtime calls package gpu makes over host memory (see that file
// for its model). Tests of package gpu and of the engine's GPU paths open
// it with gpu.Open(gpu.Options{Library: standin.Build(t), ...}), and read
// its counters or inject faults with Query and Inject.
package standin

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
)

// Source returns the path of standin.c. It is found from this file's
// location at build time, so a test binary copied to another machine
// (go test -c) may not find it; Build then skips.
func Source() string {
	_, file, _, ok := runtime.Caller(0)
	if !ok {
		return ""
	}
	return filepath.Join(filepath.Dir(file), "..", "..", "gpu", "testdata", "standin", "standin.c")
}

var (
	mu    sync.Mutex
	built = map[string]string{} // cache key to compiled library
)

// Build returns the path of a fresh copy of the stand-in driver compiled
// with the given extra gcc arguments (-DSTANDIN_NO_DEVICE,
// -DSTANDIN_NO_DMABUF, -DSTANDIN_NO_HSA, -DSTANDIN_PROPRIETARY,
// -DSTANDIN_STRICT_IPC, -DSTANDIN_VMM_CHUNK=N: see standin.c), in a
// temporary directory of
// tb. Every call returns a distinct file, which dlopen loads as a distinct
// library: each test that calls Build gets fresh driver state. The library
// is compiled once per source and arguments (in the user's cache
// directory) and copied. Build skips tb when gcc or the source is missing.
func Build(tb testing.TB, args ...string) string {
	tb.Helper()
	gcc, err := exec.LookPath("gcc")
	if err != nil {
		tb.Skip("gcc not found: stand-in driver tests compile gpu/testdata/standin/standin.c with gcc")
	}
	src, err := os.ReadFile(Source())
	if err != nil {
		tb.Skipf("stand-in driver source not found (test binary moved from its source tree?): %v", err)
	}
	cached, err := compile(gcc, src, args)
	if err != nil {
		tb.Fatalf("compiling the stand-in driver: %v", err)
	}
	lib := filepath.Join(tb.TempDir(), "libstandin.so")
	if err := copyFile(lib, cached); err != nil {
		tb.Fatalf("copying the stand-in driver: %v", err)
	}
	return lib
}

// compile returns a compiled library for src and args, building it the
// first time.
func compile(gcc string, src []byte, args []string) (string, error) {
	h := sha256.New()
	h.Write(src)
	fmt.Fprintf(h, "\x00%s\x00%s", strings.Join(args, "\x00"), runtime.GOARCH)
	key := hex.EncodeToString(h.Sum(nil))[:24]
	mu.Lock()
	defer mu.Unlock()
	if lib, ok := built[key]; ok {
		return lib, nil
	}
	dir, err := os.UserCacheDir()
	if err != nil {
		dir = os.TempDir()
	}
	dir = filepath.Join(dir, "mori-go-standin")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", err
	}
	lib := filepath.Join(dir, "libstandin-"+key+".so")
	if _, err := os.Stat(lib); err == nil {
		built[key] = lib
		return lib, nil
	}
	srcFile := filepath.Join(dir, "standin-"+key+".c")
	if err := os.WriteFile(srcFile, src, 0o644); err != nil {
		return "", err
	}
	defer os.Remove(srcFile)
	tmp, err := os.CreateTemp(dir, "libstandin-*.so.tmp")
	if err != nil {
		return "", err
	}
	tmp.Close()
	defer os.Remove(tmp.Name())
	cmd := exec.Command(gcc, append([]string{"-shared", "-fPIC", "-O1", "-Wall", "-Werror", "-o", tmp.Name(), srcFile}, args...)...)
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("%v: %s", err, out)
	}
	// Rename is atomic: concurrent test processes never see half a file.
	if err := os.Rename(tmp.Name(), lib); err != nil {
		return "", err
	}
	built[key] = lib
	return lib, nil
}

func copyFile(dst, src string) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o755)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}
