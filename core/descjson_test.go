package core

import (
	"encoding/json"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestDescriptorsMarshalToTheirReadableView(t *testing.T) {
	ed := EngineDesc{Key: "k", NodeID: "n", Hostname: "h", Host: "10.0.0.1", Port: 7, PID: 9,
		Backends: []BackendBlob{{Type: BackendTCP, Data: []byte{1}}}}
	md := MemoryDesc{EngineKey: "k", ID: 3, Device: 1, Location: LocationGPU, Addr: 4096, Size: 64,
		DeviceBusID: "0000:01:00.0", NUMANode: -1, Backends: []BackendBlob{{Type: BackendXGMI}, {Type: BackendRDMA}}}
	for _, c := range []struct {
		enc  func() ([]byte, error)
		want string
	}{
		{ed.MarshalBinary, `{"kind":"engine","key":"k","node_id":"n","hostname":"h","host":"10.0.0.1","port":7,"pid":9,"backends":["tcp"]}`},
		{md.MarshalBinary, `{"kind":"memory","engine_key":"k","id":3,"device_id":1,"location":2,"data":4096,"size":64,` +
			`"device_bus_id":"0000:01:00.0","numa_node":-1,"backends":["xgmi","rdma"]}`},
	} {
		b, err := c.enc()
		require.NoError(t, err)
		d, err := DecodeDesc(b)
		require.NoError(t, err)
		j, err := json.Marshal(d)
		require.NoError(t, err)
		require.JSONEq(t, c.want, string(j))
	}
	_, err := DecodeDesc([]byte("MGX"))
	require.Equal(t, ErrInvalidArgs, CodeOf(err))
	require.Contains(t, err.Error(), "not a descriptor")
}
