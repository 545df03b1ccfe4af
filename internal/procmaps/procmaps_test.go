package procmaps

import (
	"strings"
	"syscall"
	"testing"
	"unsafe"

	"github.com/stretchr/testify/require"
)

func TestCheckMaps(t *testing.T) {
	const maps = `00400000-00452000 r-xp 00000000 08:02 173521      /usr/bin/dbus-daemon
200000000-300000000 ---p 00000000 00:00 0
7f0000000000-7f0000010000 rw-p 00000000 00:00 0
7f0000010000-7f0000020000 rw-s 00000000 00:01 7          /memfd:x (deleted)
7f0000030000-7f0000040000 rw-p 00000000 00:00 0
`
	check := func(start, end uint64) error { return checkMaps(strings.NewReader(maps), start, end) }
	require.NoError(t, check(0x7f0000000100, 0x7f0000000200), "inside one mapping")
	require.NoError(t, check(0x7f0000000100, 0x7f0000020000), "across adjacent mappings, to the end")
	require.ErrorContains(t, check(0x7f0000000100, 0x7f0000020001), "0x7f0000020000 is not mapped")
	require.ErrorContains(t, check(0x7f0000025000, 0x7f0000030010), "0x7f0000025000 is not mapped")
	require.ErrorContains(t, check(0x400100, 0x400200), "is mapped r-xp, not readable and writable")
	require.ErrorContains(t, check(0x200001000, 0x200002000), "0x200001000 is mapped ---p", "a driver's address reservation")
	require.ErrorContains(t, check(0x10, 0x20), "0x10 is not mapped")
	require.ErrorContains(t, checkMaps(strings.NewReader("zz-10 rw-p\n"), 0, 1), "malformed")
}

func TestCheckReadWrite(t *testing.T) {
	buf := make([]byte, 3*4096)
	require.NoError(t, CheckReadWrite(uintptr(unsafe.Pointer(&buf[0])), uint64(len(buf))))

	// An inaccessible reservation, as a GPU driver makes for device memory.
	mem, err := syscall.Mmap(-1, 0, 2*4096, syscall.PROT_NONE, syscall.MAP_PRIVATE|syscall.MAP_ANON)
	require.NoError(t, err)
	p := uintptr(unsafe.Pointer(&mem[0]))
	require.ErrorContains(t, CheckReadWrite(p, 4096), "not readable and writable")
	require.NoError(t, syscall.Mprotect(mem, syscall.PROT_READ|syscall.PROT_WRITE))
	require.NoError(t, CheckReadWrite(p, 2*4096))
	require.NoError(t, syscall.Munmap(mem))
	require.ErrorContains(t, CheckReadWrite(p, 4096), "is not mapped in this process")

	require.ErrorContains(t, CheckReadWrite(p, 0), "empty range")
	require.ErrorContains(t, CheckReadWrite(^uintptr(0)-10, 100), "wraps around")
}
