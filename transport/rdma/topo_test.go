package rdma_test

import (
	"bufio"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/mori-go/mori-go/core"
	"github.com/mori-go/mori-go/core/engine"
	"github.com/mori-go/mori-go/stack"
	"github.com/mori-go/mori-go/transport/rdma"
	"github.com/mori-go/mori-go/verbs"
	"github.com/mori-go/mori-go/verbs/sim"
)

// fakeSysfs builds the tree described by testdata/sysfs/name.txt and
// returns its root.
func fakeSysfs(t *testing.T, name string) string {
	t.Helper()
	root := t.TempDir()
	f, err := os.Open(filepath.Join("testdata", "sysfs", name+".txt"))
	require.NoError(t, err)
	defer f.Close()
	paths := map[string]string{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) == 0 || strings.HasPrefix(fields[0], "#") {
			continue
		}
		switch fields[0] {
		case "pci":
			bdf, numa, path := fields[1], fields[2], fields[3]
			dir := filepath.Join(root, "devices", path)
			require.NoError(t, os.MkdirAll(dir, 0o755))
			require.NoError(t, os.WriteFile(filepath.Join(dir, "numa_node"), []byte(numa+"\n"), 0o644))
			link := filepath.Join(root, "bus", "pci", "devices", bdf)
			require.NoError(t, os.MkdirAll(filepath.Dir(link), 0o755))
			require.NoError(t, os.Symlink(filepath.Join("..", "..", "..", "devices", path), link))
			paths[bdf] = path
		case "ib":
			dir := filepath.Join(root, "class", "infiniband", fields[1])
			require.NoError(t, os.MkdirAll(dir, 0o755))
			require.NoError(t, os.Symlink(filepath.Join("..", "..", "..", "devices", paths[fields[2]]), filepath.Join(dir, "device")))
		default:
			t.Fatalf("%s: unknown line %q", name, sc.Text())
		}
	}
	require.NoError(t, sc.Err())
	return root
}

func TestPCIPathsAndDistances(t *testing.T) {
	topo := rdma.Topology{Root: fakeSysfs(t, "two-sockets")}
	p, err := topo.PCIPath("0000:03:00.0")
	require.NoError(t, err)
	require.Equal(t, []string{"pci0000:00", "0000:00:01.0", "0000:01:00.0", "0000:02:00.0", "0000:03:00.0"}, p)
	bdf, err := topo.RDMADevicePCI("mlx5_2")
	require.NoError(t, err)
	require.Equal(t, "0000:84:00.0", bdf)
	require.Equal(t, 1, topo.NUMANode("0000:84:00.0"))
	require.Equal(t, -1, topo.NUMANode("0000:99:00.0"))

	nics := []verbs.DeviceInfo{{Name: "mlx5_0"}, {Name: "mlx5_1"}, {Name: "mlx5_2"}}
	ranked, err := topo.RankNICs("0000:03:00.0", nics)
	require.NoError(t, err)
	require.Equal(t, []rdma.NICRank{
		{Name: "mlx5_0", PCIAddr: "0000:04:00.0", Distance: 4, SameNUMA: true},
		{Name: "mlx5_1", PCIAddr: "0000:05:00.0", Distance: 6, SameNUMA: true},
		{Name: "mlx5_2", PCIAddr: "0000:84:00.0", Distance: 1010, SameNUMA: false},
	}, ranked)
	// The GPU runtimes' spellings of a bus id are accepted.
	for _, id := range []string{"00000000:83:00.0", "83:00.0", "0000:83:00.0"} {
		ranked, err = topo.RankNICs(id, nics)
		require.NoError(t, err, id)
		require.Equal(t, "mlx5_2", ranked[0].Name, id)
	}
	// A NIC whose place is unknown ranks last.
	ranked, err = topo.RankNICs("0000:83:00.0", append([]verbs.DeviceInfo{{Name: "mlx5_9"}}, nics...))
	require.NoError(t, err)
	require.Equal(t, "mlx5_9", ranked[3].Name)
	require.Equal(t, -1, ranked[3].Distance)
	_, err = topo.RankNICs("0000:42:00.0", nics)
	require.ErrorContains(t, err, "0000:42:00.0")
}

func TestParseDeviceFilter(t *testing.T) {
	for _, c := range []struct {
		in   string
		want rdma.DeviceFilter
	}{
		{"", rdma.DeviceFilter{}},
		{"mlx5_0,mlx5_1", rdma.DeviceFilter{Entries: []rdma.DeviceEntry{{Name: "mlx5_0"}, {Name: "mlx5_1"}}}},
		{" ^mlx5_2 ", rdma.DeviceFilter{Exclude: true, Entries: []rdma.DeviceEntry{{Name: "mlx5_2"}}}},
		{"mlx5_0:1, ,ens1f0", rdma.DeviceFilter{Entries: []rdma.DeviceEntry{{Name: "mlx5_0", Port: 1}, {Name: "ens1f0"}}}},
	} {
		got, err := rdma.ParseDeviceFilter(c.in)
		require.NoError(t, err, c.in)
		require.Equal(t, c.want, got, c.in)
	}
	for _, bad := range []string{"^", "mlx5_0:0", "mlx5_0:x", "a/b", ":1"} {
		_, err := rdma.ParseDeviceFilter(bad)
		require.Error(t, err, bad)
	}
	f, _ := rdma.ParseDeviceFilter("^mlx5_0:1,mlx5_1")
	require.Equal(t, "^mlx5_0:1,mlx5_1", f.String())
}

func TestSelectGID(t *testing.T) {
	ll := verbs.GID{0xfe, 0x80, 15: 1}
	v4 := verbs.GID{10: 0xff, 11: 0xff, 12: 192, 13: 168, 14: 1, 15: 2}
	v6 := verbs.GID{0x20, 0x01, 0x0d, 0xb8, 15: 9}
	roce := []verbs.GIDEntry{
		{Index: 0, GID: ll, Type: verbs.GIDTypeRoCEv1},
		{Index: 1, GID: ll, Type: verbs.GIDTypeRoCEv2},
		{Index: 2, GID: v6, Type: verbs.GIDTypeRoCEv2},
		{Index: 3, GID: v4, Type: verbs.GIDTypeRoCEv1},
		{Index: 4, GID: v4, Type: verbs.GIDTypeRoCEv2},
		{Index: 5},
	}
	g, err := rdma.SelectGID(roce, verbs.LinkEthernet, -1)
	require.NoError(t, err)
	require.Equal(t, 4, g.Index, "RoCE v2 with an IPv4 address first")
	g, _ = rdma.SelectGID(roce[:4], verbs.LinkEthernet, -1)
	require.Equal(t, 2, g.Index, "then RoCE v2 with a global IPv6 address")
	g, _ = rdma.SelectGID(roce[:2], verbs.LinkEthernet, -1)
	require.Equal(t, 1, g.Index, "then RoCE v2 link-local")
	g, err = rdma.SelectGID(roce, verbs.LinkEthernet, 3)
	require.NoError(t, err)
	require.Equal(t, 3, g.Index, "a forced index wins")
	_, err = rdma.SelectGID(roce, verbs.LinkEthernet, 5)
	require.ErrorContains(t, err, "empty")
	_, err = rdma.SelectGID(roce, verbs.LinkEthernet, 9)
	require.ErrorContains(t, err, "not in the table")
	g, _ = rdma.SelectGID([]verbs.GIDEntry{{Index: 0, GID: ll}, {Index: 1, GID: v6}}, verbs.LinkInfiniBand, -1)
	require.Equal(t, 0, g.Index, "InfiniBand takes the first valid entry")
	_, err = rdma.SelectGID([]verbs.GIDEntry{{Index: 0}}, verbs.LinkEthernet, -1)
	require.Error(t, err)

	// A container bridge on the port's netdev adds its own IPv4 GIDs,
	// often at lower indices: they route nowhere useful.
	bridge := verbs.GID{10: 0xff, 11: 0xff, 12: 172, 13: 17, 15: 1}
	withDocker := []verbs.GIDEntry{
		{Index: 0, GID: ll, Type: verbs.GIDTypeRoCEv2, Netdev: "ens1f0"},
		{Index: 1, GID: bridge, Type: verbs.GIDTypeRoCEv2, Netdev: "docker0"},
		{Index: 2, GID: v6, Type: verbs.GIDTypeRoCEv2, Netdev: "ens1f0"},
		{Index: 3, GID: v4, Type: verbs.GIDTypeRoCEv2, Netdev: "ens1f0"},
	}
	g, _ = rdma.SelectGID(withDocker, verbs.LinkEthernet, -1)
	require.Equal(t, 3, g.Index, "the host's address, not docker0's")
	g, _ = rdma.SelectGID(withDocker[:3], verbs.LinkEthernet, -1)
	require.Equal(t, 2, g.Index, "even an IPv6 GID of the host before docker0's IPv4")
}

// threeNICs is a simulated host laid out as testdata/sysfs/two-sockets.
func threeNICs(f *sim.Fabric, name string, nics ...sim.NIC) *sim.Host {
	if len(nics) == 0 {
		nics = []sim.NIC{
			{Name: "mlx5_0", PCIAddr: "0000:04:00.0"},
			{Name: "mlx5_1", PCIAddr: "0000:05:00.0"},
			{Name: "mlx5_2", PCIAddr: "0000:84:00.0"},
		}
	}
	return f.AddHost(name, nics...)
}

func testEnv() core.BackendEnv {
	return core.BackendEnv{LocalKey: "local", Registry: core.NewRegistry(), Inbound: core.NewInboundTable(0), Logger: testLogger()}
}

// nicsOf builds a backend on h and returns the names of the NICs it uses,
// the default one first.
func nicsOf(t *testing.T, h *sim.Host, cfg rdma.Config, o rdma.Options) ([]string, error) {
	t.Helper()
	if o.Getenv == nil {
		o.Getenv = noEnv
	}
	b, err := rdma.NewFactory(h, o)(testEnv(), cfg)
	if err != nil {
		return nil, err
	}
	defer b.Close()
	names := []string{b.(*rdma.Backend).DefaultNIC()}
	for _, n := range b.(*rdma.Backend).NICs() {
		names = append(names, n.Name)
	}
	return names, nil
}

func TestNICSelection(t *testing.T) {
	f := sim.NewFabric(sim.Config{})
	h := threeNICs(f, "h")
	topo := rdma.Topology{Root: fakeSysfs(t, "two-sockets")}
	netdev := func(n string) (string, error) {
		if n == "ens1f0" {
			return "mlx5_1", nil
		}
		return "", os.ErrNotExist
	}
	all := []string{"mlx5_0", "mlx5_1", "mlx5_2"}
	cases := []struct {
		name    string
		devices string
		env     string
		gpu     string
		def     string   // the default NIC
		want    []string // every NIC in use
		err     string
	}{
		{name: "no hint: first by name", def: "mlx5_0", want: all},
		{name: "nearest the GPU on socket 1", gpu: "0000:83:00.0", def: "mlx5_2", want: all},
		{name: "nearest the GPU on socket 0", gpu: "03:00.0", def: "mlx5_0", want: all},
		{name: "unknown GPU: first by name", gpu: "0000:42:00.0", def: "mlx5_0", want: all},
		{name: "named devices, nearest of them", devices: "mlx5_2,mlx5_1", gpu: "0000:03:00.0", def: "mlx5_1", want: []string{"mlx5_1", "mlx5_2"}},
		{name: "one named port", devices: "mlx5_1:1", def: "mlx5_1", want: []string{"mlx5_1"}},
		{name: "excluded, then nearest", devices: "^mlx5_2", gpu: "0000:83:00.0", def: "mlx5_1", want: []string{"mlx5_0", "mlx5_1"}},
		{name: "network interface", devices: "ens1f0", def: "mlx5_1", want: []string{"mlx5_1"}},
		{name: "MORI_RDMA_DEVICES when the config is empty", env: "mlx5_2", def: "mlx5_2", want: []string{"mlx5_2"}},
		{name: "the config wins over MORI_RDMA_DEVICES", devices: "mlx5_1", env: "mlx5_2", def: "mlx5_1", want: []string{"mlx5_1"}},
		{name: "unknown device", devices: "mlx5_7", err: `no RDMA device or network interface "mlx5_7"`},
		{name: "everything excluded", devices: "^mlx5_0,mlx5_1,mlx5_2", err: "no active RDMA port"},
		{name: "port 2 does not exist", devices: "mlx5_0:2", err: "no active RDMA port"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			env := c.env
			o := rdma.Options{GPUBusID: c.gpu, Topology: topo, Netdev: netdev, Getenv: func(k string) string {
				if k == "MORI_RDMA_DEVICES" {
					return env
				}
				return ""
			}}
			got, err := nicsOf(t, h, rdma.Config{Devices: c.devices}, o)
			if c.err != "" {
				require.ErrorContains(t, err, c.err)
				return
			}
			require.NoError(t, err)
			require.Equal(t, append([]string{c.def}, c.want...), got)
		})
	}
}

func TestNoActivePortIsNotSupported(t *testing.T) {
	f := sim.NewFabric(sim.Config{})
	h := f.AddHost("h", sim.NIC{Name: "mlx5_0", PortDown: true})
	_, err := nicsOf(t, h, rdma.Config{}, rdma.Options{})
	require.ErrorIs(t, err, verbs.ErrNotSupported)
	require.ErrorContains(t, err, "mlx5_0 port 1 is DOWN")
	_, err = nicsOf(t, f.AddHost("empty"), rdma.Config{}, rdma.Options{})
	require.ErrorIs(t, err, verbs.ErrNotSupported)
	require.ErrorContains(t, err, "no RDMA device")
}

func TestGIDIndexAndPathMTUFromMORIVariables(t *testing.T) {
	f := sim.NewFabric(sim.Config{})
	h := f.AddHost("h", sim.NIC{Name: "mlx5_0"})
	env := map[string]string{"MORI_IB_GID_INDEX": "1", "MORI_IB_PATH_MTU": "1024"}
	b, err := rdma.NewFactory(h, rdma.Options{Getenv: func(k string) string { return env[k] }})(testEnv(), rdma.Config{})
	require.NoError(t, err)
	defer b.Close()
	n := b.(*rdma.Backend).NICs()[0]
	require.Equal(t, byte(0xfe), n.GID[0], "GID index 1 is the link-local RoCE v2 entry")
	require.Equal(t, verbs.MTU1024, n.MTU)

	env["MORI_IB_PATH_MTU"] = "1000"
	_, err = rdma.NewFactory(h, rdma.Options{Getenv: func(k string) string { return env[k] }})(testEnv(), rdma.Config{})
	require.ErrorContains(t, err, "MORI_IB_PATH_MTU")
}

func TestConfigIsValidated(t *testing.T) {
	f := sim.NewFabric(sim.Config{})
	h := f.AddHost("h", sim.NIC{Name: "mlx5_0"})
	for _, c := range []struct {
		cfg rdma.Config
		err string
	}{
		{rdma.Config{QPPerTransfer: 65}, "qp_per_transfer 65"},
		{rdma.Config{PollCQMode: 2}, "poll_cq_mode 2"},
		{rdma.Config{Devices: "^"}, "nothing to exclude"},
	} {
		_, err := nicsOf(t, h, c.cfg, rdma.Options{})
		require.ErrorContains(t, err, c.err)
		require.Equal(t, core.ErrInvalidArgs, core.CodeOf(err))
	}
}

// busGPU is a fake GPU driver that can name its device's PCI address.
type busGPU struct{ *fakeGPU }

func (busGPU) PCIBusID(device int) (string, error) { return "0000:83:00.0", nil }

func TestNICNearestTheGPUOfMemoryAlreadyRegistered(t *testing.T) {
	f := sim.NewFabric(sim.Config{})
	h := threeNICs(f, "h")
	gpu := busGPU{newFakeGPU(t, 1<<16)}
	e, err := stack.New(stack.Config{Config: engine.Config{
		Key: "gpu-engine", Mode: engine.ModeRDMA, GPU: gpu, Logger: testLogger(),
	}, RDMA: rdma.NewFactory(h, rdma.Options{Topology: rdma.Topology{Root: fakeSysfs(t, "two-sockets")}, Getenv: noEnv})})
	require.NoError(t, err)
	defer e.Close()
	_, err = e.RegisterMemory(gpu.base(), 1<<16, 1, core.LocationGPU)
	require.NoError(t, err)
	createRDMA(t, e, defaultRDMA())
	require.Equal(t, "mlx5_2", e.DataBackend().(*rdma.Backend).DefaultNIC())
}
