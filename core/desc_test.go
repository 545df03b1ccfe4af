package core

import (
	"bytes"
	"encoding/binary"
	"errors"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

func sampleEngineDesc() EngineDesc {
	return EngineDesc{
		Key:      "prefill-0",
		NodeID:   "node-a",
		Hostname: "host-a.example",
		Host:     "10.0.0.1",
		Port:     5555,
		PID:      4242,
		Backends: []BackendBlob{{Type: BackendTCP, Data: []byte{0x39, 0x30}}, {Type: BackendRDMA, Data: bytes.Repeat([]byte{7}, 100)}},
	}
}

func sampleMemoryDesc() MemoryDesc {
	return MemoryDesc{
		EngineKey:   "decode-3",
		ID:          17,
		Token:       Token{0xa5, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 0x5a},
		Device:      2,
		Location:    LocationGPU,
		Addr:        0x7f0000001000,
		Size:        1 << 30,
		DeviceBusID: "0000:c1:00.0",
		NUMANode:    -1,
		Backends:    []BackendBlob{{Type: BackendRDMA, Data: []byte("rkey")}, {Type: BackendXGMI, Data: make([]byte, IPCHandleSize)}},
	}
}

func equalEngineDesc(t *testing.T, want, got EngineDesc) {
	t.Helper()
	require.Equal(t, want.Key, got.Key)
	require.Equal(t, want.NodeID, got.NodeID)
	require.Equal(t, want.Hostname, got.Hostname)
	require.Equal(t, want.Host, got.Host)
	require.Equal(t, want.Port, got.Port)
	require.Equal(t, want.PID, got.PID)
	require.Equal(t, len(want.Backends), len(got.Backends))
	for i := range want.Backends {
		require.Equal(t, want.Backends[i].Type, got.Backends[i].Type)
		require.Equal(t, string(want.Backends[i].Data), string(got.Backends[i].Data))
	}
}

func TestEngineDescRoundTrip(t *testing.T) {
	for _, d := range []EngineDesc{
		sampleEngineDesc(),
		{Key: "k"},
		{
			Key:      strings.Repeat("k", MaxKeyLen),
			NodeID:   strings.Repeat("n", MaxHostLen),
			Hostname: strings.Repeat("h", MaxHostLen),
			Host:     strings.Repeat("a", MaxHostLen),
			Port:     65535,
			PID:      ^uint32(0),
			Backends: func() []BackendBlob {
				bs := make([]BackendBlob, MaxBackendBlobs)
				for i := range bs {
					bs[i] = BackendBlob{Type: BackendType(i), Data: bytes.Repeat([]byte{byte(i)}, MaxBlobLen)}
				}
				return bs
			}(),
		},
	} {
		b, err := d.MarshalBinary()
		require.NoError(t, err)
		require.LessOrEqual(t, len(b), maxEngineDescLen)
		var got EngineDesc
		require.NoError(t, got.UnmarshalBinary(b))
		equalEngineDesc(t, d, got)
		again, err := got.MarshalBinary()
		require.NoError(t, err)
		require.Equal(t, b, again, "the encoding is canonical")
	}
	d := sampleEngineDesc()
	require.Equal(t, []byte{0x39, 0x30}, d.Blob(BackendTCP))
	require.Nil(t, d.Blob(BackendFabric))
}

func TestMemoryDescRoundTrip(t *testing.T) {
	for _, d := range []MemoryDesc{
		sampleMemoryDesc(),
		{EngineKey: "e", Location: LocationCPU, Device: -1, NUMANode: 3, Size: ^uint64(0), Addr: ^uint64(0), ID: ^uint32(0)},
	} {
		b, err := d.MarshalBinary()
		require.NoError(t, err)
		var got MemoryDesc
		require.NoError(t, got.UnmarshalBinary(b))
		require.True(t, d.Equal(&got), "%v != %v", d, got)
		again, err := got.MarshalBinary()
		require.NoError(t, err)
		require.Equal(t, b, again)
	}
	m := sampleMemoryDesc()
	require.Equal(t, []byte("rkey"), m.Blob(BackendRDMA))
	require.Nil(t, m.Blob(BackendTCP))
	require.Contains(t, m.String(), `memory 17 of "decode-3" (gpu`)
	o := m
	o.Backends = []BackendBlob{{Type: BackendRDMA, Data: []byte("rkeY")}, m.Backends[1]}
	require.False(t, m.Equal(&o))
}

// requireMalformed checks that err wraps ErrMalformed and mentions want.
func requireMalformed(t *testing.T, err error, want string) {
	t.Helper()
	require.Error(t, err)
	require.True(t, errors.Is(err, ErrMalformed), "%v does not wrap ErrMalformed", err)
	require.Contains(t, err.Error(), want)
}

func TestEngineDescRefusals(t *testing.T) {
	d := sampleEngineDesc()
	good, err := d.MarshalBinary()
	require.NoError(t, err)
	mutate := func(f func(b []byte) []byte) []byte { return f(append([]byte(nil), good...)) }
	cases := []struct {
		name string
		in   []byte
		want string
	}{
		{"empty", nil, "magic"},
		{"bad magic", mutate(func(b []byte) []byte { b[0] = 'X'; return b }), "bad magic"},
		{"memory desc", func() []byte { m := sampleMemoryDesc(); b, _ := m.MarshalBinary(); return b }(), "bad magic"},
		{"unknown version", mutate(func(b []byte) []byte { b[3] = 2; return b }), "version 2"},
		{"version zero", mutate(func(b []byte) []byte { b[3] = 0; return b }), "version 0"},
		{"trailing bytes", append(append([]byte(nil), good...), 0), "1 trailing bytes"},
		{"truncated", good[:len(good)-1], "need"},
		{"key over limit", engineBytes(strings.Repeat("k", MaxKeyLen+1), "", 0, nil), "key at byte 6: length 513 over the limit"},
		{"key length past input", []byte("MGE\x01\xf4\x01"), "need 500 bytes"},
		{"host over limit", engineBytes("k", strings.Repeat("h", MaxHostLen+1), 0, nil), "host at byte 13: length 256 over the limit"},
		{"empty key", engineBytes("", "", 0, nil), "empty key"},
		{"too many blobs", engineBytes("k", "", MaxBackendBlobs+1, nil), "9 blobs, at most 8"},
		{"blob over limit", engineBytes("k", "", 1, make([]byte, MaxBlobLen+1)), "backend blob at byte 23: length 4097 over the limit"},
		{"blob past input", engineBytes("k", "", 2, []byte{1, 2}), "backend type at byte"},
		{"oversized input", make([]byte, maxEngineDescLen+1), "at most"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			got := EngineDesc{Key: "untouched"}
			requireMalformed(t, got.UnmarshalBinary(c.in), c.want)
			require.Equal(t, "untouched", got.Key, "a refused decode leaves the value alone")
		})
	}
	// The encoding the cases above break decodes when within limits.
	var min EngineDesc
	require.NoError(t, min.UnmarshalBinary(engineBytes("k", "h", 1, []byte{1, 2})))
	require.Equal(t, "k", min.Key)
	require.Equal(t, "h", min.Host)
	require.Equal(t, []byte{1, 2}, min.Blob(BackendTCP))
}

// engineBytes writes an engine descriptor by hand, bypassing the encoder's
// checks: key, host, a blob count and (when count > 0) one TCP blob.
func engineBytes(key, host string, count int, blob []byte) []byte {
	w := wireWriter{}
	w.b = append(w.b, "MGE"...)
	w.u8(descVersion)
	w.str(key)
	w.str("")
	w.str("")
	w.str(host)
	w.u16(1)
	w.u32(2)
	w.u8(uint8(count))
	if count > 0 {
		w.u8(uint8(BackendTCP))
		w.blob(blob)
	}
	return w.b
}

func TestMemoryDescRefusals(t *testing.T) {
	m := sampleMemoryDesc()
	good, err := m.MarshalBinary()
	require.NoError(t, err)
	mutate := func(f func(b []byte) []byte) []byte { return f(append([]byte(nil), good...)) }
	// Offset of the location byte: magic, version, key, id, token, device.
	locAt := 4 + 2 + len(m.EngineKey) + 4 + TokenLen + 4
	cases := []struct {
		name string
		in   []byte
		want string
	}{
		{"empty", []byte{}, "magic"},
		{"engine desc", func() []byte { d := sampleEngineDesc(); b, _ := d.MarshalBinary(); return b }(), "bad magic"},
		{"unknown version", mutate(func(b []byte) []byte { b[3] = 9; return b }), "version 9"},
		{"version 1 (no token)", mutate(func(b []byte) []byte { b[3] = 1; return b }), "register the memory again"},
		{"token cut short", good[:4+2+len(m.EngineKey)+4+5], "token at byte"},
		{"trailing bytes", append(append([]byte(nil), good...), 1, 2, 3), "3 trailing bytes"},
		{"truncated", good[:20], "need"},
		{"unknown location", mutate(func(b []byte) []byte { b[locAt] = 0; return b }), "location 0"},
		{"location 7", mutate(func(b []byte) []byte { b[locAt] = 7; return b }), "location 7"},
		{"empty engine key", func() []byte {
			c := m
			c.EngineKey = "x"
			b, _ := c.MarshalBinary()
			return append([]byte("MGM\x02\x00\x00"), b[7:]...)
		}(), "empty engine key"},
		{"oversized input", make([]byte, maxEngineDescLen+1), "at most"},
		{"key over limit", func() []byte {
			b := []byte("MGM\x02")
			b = binary.LittleEndian.AppendUint16(b, 0xffff)
			return append(b, make([]byte, 100)...)
		}(), "engine key at byte 6: length 65535 over the limit"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			got := MemoryDesc{EngineKey: "untouched"}
			requireMalformed(t, got.UnmarshalBinary(c.in), c.want)
			require.Equal(t, "untouched", got.EngineKey)
		})
	}
}

func TestDescEncodersRefuseWhatDecodersRefuse(t *testing.T) {
	cases := []struct {
		name string
		d    EngineDesc
		want string
	}{
		{"empty key", EngineDesc{}, "empty key"},
		{"long key", EngineDesc{Key: strings.Repeat("k", MaxKeyLen+1)}, "at most 512"},
		{"long host", EngineDesc{Key: "k", Host: strings.Repeat("h", MaxHostLen+1)}, "host of 256 bytes"},
		{"long node id", EngineDesc{Key: "k", NodeID: strings.Repeat("h", MaxHostLen+1)}, "node id of 256 bytes"},
		{"too many blobs", EngineDesc{Key: "k", Backends: make([]BackendBlob, MaxBackendBlobs+1)}, "9 backend blobs"},
		{"big blob", EngineDesc{Key: "k", Backends: []BackendBlob{{Type: BackendRDMA, Data: make([]byte, MaxBlobLen+1)}}}, "rdma blob of 4097 bytes"},
	}
	for _, c := range cases {
		_, err := c.d.MarshalBinary()
		require.ErrorContains(t, err, c.want, c.name)
		require.Equal(t, ErrInvalidArgs, CodeOf(err), c.name)
	}
	mcases := []struct {
		name string
		m    MemoryDesc
		want string
	}{
		{"empty key", MemoryDesc{Location: LocationCPU}, "engine key of 0 bytes"},
		{"long key", MemoryDesc{EngineKey: strings.Repeat("k", MaxKeyLen+1), Location: LocationCPU}, "engine key of 513 bytes"},
		{"long bus id", MemoryDesc{EngineKey: "k", Location: LocationCPU, DeviceBusID: strings.Repeat("b", MaxHostLen+1)}, "bus id of 256"},
		{"unknown location", MemoryDesc{EngineKey: "k"}, "unknown location 0"},
		{"too many blobs", MemoryDesc{EngineKey: "k", Location: LocationCPU, Backends: make([]BackendBlob, MaxBackendBlobs+1)}, "9 backend blobs"},
	}
	for _, c := range mcases {
		_, err := c.m.MarshalBinary()
		require.ErrorContains(t, err, c.want, c.name)
		require.Equal(t, ErrInvalidArgs, CodeOf(err), c.name)
	}
}

func FuzzEngineDesc(f *testing.F) {
	for _, d := range []EngineDesc{sampleEngineDesc(), {Key: "k"}, {Key: "x", Backends: []BackendBlob{{Type: BackendTCP}}}} {
		b, err := d.MarshalBinary()
		require.NoError(f, err)
		f.Add(b)
	}
	f.Add([]byte("MGE"))
	f.Add([]byte("MGE\x02"))
	f.Fuzz(func(t *testing.T, b []byte) {
		var d EngineDesc
		if err := d.UnmarshalBinary(b); err != nil {
			if !errors.Is(err, ErrMalformed) {
				t.Fatalf("decode error %v does not wrap ErrMalformed", err)
			}
			return
		}
		// What decodes validates and re-encodes to the same bytes, and that
		// decodes to an equal value.
		require.NoError(t, d.Validate())
		enc, err := d.MarshalBinary()
		require.NoError(t, err)
		require.Equal(t, b, enc)
		var again EngineDesc
		require.NoError(t, again.UnmarshalBinary(enc))
		equalEngineDesc(t, d, again)
	})
}

func FuzzMemoryDesc(f *testing.F) {
	for _, m := range []MemoryDesc{sampleMemoryDesc(), {EngineKey: "e", Location: LocationCPU}} {
		b, err := m.MarshalBinary()
		require.NoError(f, err)
		f.Add(b)
	}
	f.Add([]byte("MGM\x01"))
	f.Add([]byte("MGM\x02\x01\x00e\x01\x00\x00\x00short token"))
	f.Fuzz(func(t *testing.T, b []byte) {
		var m MemoryDesc
		if err := m.UnmarshalBinary(b); err != nil {
			if !errors.Is(err, ErrMalformed) {
				t.Fatalf("decode error %v does not wrap ErrMalformed", err)
			}
			return
		}
		enc, err := m.MarshalBinary()
		require.NoError(t, err)
		require.Equal(t, b, enc)
		var again MemoryDesc
		require.NoError(t, again.UnmarshalBinary(enc))
		require.True(t, m.Equal(&again))
	})
}
