//go:build linux && cgo

package verbs

import (
	"debug/elf"
	"os"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestGoConstantsMatchVerbsHeaders(t *testing.T) {
	require.NoError(t, checkABI())
}

func TestLoadingAMissingLibraryIsNotSupported(t *testing.T) {
	_, err := Load("libibverbs-missing.so.1")
	require.ErrorIs(t, err, ErrNotSupported)
	require.ErrorContains(t, err, "libibverbs-missing.so.1")
}

func TestSystemLibraryLoadsWhereInstalled(t *testing.T) {
	p, err := Load(LibName)
	if err != nil {
		require.ErrorIs(t, err, ErrNotSupported)
		t.Skipf("no libibverbs here: %v", err)
	}
	// Loaded with dlopen and every required symbol resolved; listing
	// devices runs ibv_get_device_list through the table.
	devs, err := p.Devices()
	require.NoError(t, err)
	t.Logf("%s: %d RDMA devices: %v", LibName, len(devs), devs)
	_, err = p.Open("no-such-device")
	require.Error(t, err)
}

func TestGIDTypeFromSysfs(t *testing.T) {
	require.Equal(t, GIDTypeRoCEv2, parseGIDType("RoCE v2\n"))
	require.Equal(t, GIDTypeRoCEv1, parseGIDType("IB/RoCE v1\n"))
	require.Equal(t, GIDTypeIB, parseGIDType(""))
}

// The verbs layer must not make its binary need libibverbs: the library
// is opened at run time, so the engine still loads where it is missing.
func TestBinaryDoesNotLinkLibibverbs(t *testing.T) {
	exe, err := os.Executable()
	require.NoError(t, err)
	f, err := elf.Open(exe)
	require.NoError(t, err)
	defer f.Close()
	libs, err := f.ImportedLibraries()
	require.NoError(t, err)
	for _, l := range libs {
		require.NotContains(t, l, "ibverbs", "linked libraries: %v", libs)
	}
}
