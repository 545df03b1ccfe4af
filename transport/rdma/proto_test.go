package rdma

import (
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/mori-go/mori-go/core"
	"github.com/mori-go/mori-go/verbs"
)

var testEndpoint = Endpoint{QPN: 0x1234, PSN: 0xabcdef, GID: verbs.GID{0xfe, 0x80, 15: 1}, LID: 7, Port: 1, MTU: verbs.MTU4096, Link: verbs.LinkEthernet, NIC: 1, ReadDepth: 16}

// seedMessages are valid messages of every type; the fuzz targets start
// from them (and from the corpus in testdata/fuzz).
func seedMessages() []*message {
	return []*message{
		{Type: msgConnect, Flags: connectFull, Endpoints: []qpEndpoint{{Index: 0, Endpoint: testEndpoint}, {Index: 3, Endpoint: testEndpoint}}},
		{Type: msgConnected, Endpoints: []qpEndpoint{{Index: 2, Endpoint: testEndpoint}}},
		{Type: msgMRQuery, MemID: 42, Token: core.Token{1, 2, 3, 15: 0xff}, Size: 1 << 30},
		{Type: msgMRInfo, Blob: encodeMemoryBlob([]RemoteKey{{RKey: 9, IOVA: 0x7f0000000000}})},
		{Type: msgDisconnect},
		{Type: msgOK},
		{Type: msgAbort, Aborts: []abortEntry{{UID: 5, Instance: 6, Parts: 2}}, Reason: "IBV_WC_RETRY_EXC_ERR"},
	}
}

func TestControlMessagesRoundTrip(t *testing.T) {
	for _, m := range seedMessages() {
		got, err := decodeMessage(m.encode())
		require.NoError(t, err, m.Type)
		require.Equal(t, m, got)
	}
}

func TestControlMessagesRefuseMalformedInput(t *testing.T) {
	good := seedMessages()[0].encode()
	cases := map[string][]byte{
		"empty":          nil,
		"bad magic":      append([]byte("XYZ"), good[3:]...),
		"bad version":    append(append([]byte(protoMagic), 9), good[4:]...),
		"truncated":      good[:len(good)-1],
		"trailing bytes": append(append([]byte(nil), good...), 0),
		"unknown type":   {'M', 'G', 'R', protoVersion, 99},
		"zero qps":       {'M', 'G', 'R', protoVersion, byte(msgConnect), 0, 0},
		"unknown flags":  append([]byte{'M', 'G', 'R', protoVersion, byte(msgConnect), 0x80}, good[6:]...),
	}
	dup := &message{Type: msgConnected, Endpoints: []qpEndpoint{{Index: 1, Endpoint: testEndpoint}, {Index: 1, Endpoint: testEndpoint}}}
	cases["repeated qp index"] = dup.encode()
	badEP := testEndpoint
	badEP.QPN = 1 << 24
	cases["qpn out of range"] = (&message{Type: msgConnected, Endpoints: []qpEndpoint{{Endpoint: badEP}}}).encode()
	badEP = testEndpoint
	badEP.MTU = 9
	cases["bad mtu"] = (&message{Type: msgConnected, Endpoints: []qpEndpoint{{Endpoint: badEP}}}).encode()
	for name, b := range cases {
		_, err := decodeMessage(b)
		require.ErrorIs(t, err, core.ErrMalformed, name)
	}
}

func TestBlobsAndNotificationsRoundTrip(t *testing.T) {
	keys := []RemoteKey{{RKey: 1, IOVA: 2}, {RKey: 3, IOVA: 4}}
	got, err := decodeMemoryBlob(encodeMemoryBlob(keys))
	require.NoError(t, err)
	require.Equal(t, keys, got)

	nics := []NICInfo{{Name: "mlx5_0", GID: testEndpoint.GID, LID: 3, Port: 1, MTU: verbs.MTU1024, Link: verbs.LinkInfiniBand}}
	gotN, err := decodeEngineBlob(encodeEngineBlob(nics))
	require.NoError(t, err)
	require.Equal(t, nics, gotN)

	n := notification{Op: core.OpRead, UID: 1 << 40, Instance: 9, Parts: 4, MemID: 12}
	buf := make([]byte, notifySlot)
	gotNote, err := decodeNotification(n.encode(buf))
	require.NoError(t, err)
	require.Equal(t, n, gotNote)
	require.Len(t, n.encode(buf), notifyLen)

	_, err = decodeMemoryBlob([]byte{blobVersion, 0})
	require.ErrorIs(t, err, core.ErrMalformed)
	_, err = decodeNotification(make([]byte, notifyLen))
	require.ErrorIs(t, err, core.ErrMalformed)
}

func FuzzControlMessage(f *testing.F) {
	for _, m := range seedMessages() {
		f.Add(m.encode())
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := decodeMessage(b)
		if err != nil {
			require.ErrorIs(t, err, core.ErrMalformed)
			return
		}
		again, err := decodeMessage(m.encode())
		require.NoError(t, err)
		require.Equal(t, m, again)
	})
}

func FuzzMemoryBlob(f *testing.F) {
	f.Add(encodeMemoryBlob([]RemoteKey{{RKey: 0x1000, IOVA: 0x7f12345000}}))
	f.Add(encodeMemoryBlob([]RemoteKey{{RKey: 1, IOVA: 2}, {RKey: 3, IOVA: 4}}))
	f.Fuzz(func(t *testing.T, b []byte) {
		keys, err := decodeMemoryBlob(b)
		if err != nil {
			require.ErrorIs(t, err, core.ErrMalformed)
			return
		}
		require.Equal(t, b, encodeMemoryBlob(keys))
	})
}

func FuzzEngineBlob(f *testing.F) {
	f.Add(encodeEngineBlob([]NICInfo{{Name: "mlx5_0", GID: testEndpoint.GID, Port: 1, MTU: verbs.MTU4096, Link: verbs.LinkEthernet}}))
	f.Add(encodeEngineBlob([]NICInfo{{Name: "ib0", LID: 9, Port: 2, MTU: verbs.MTU2048, Link: verbs.LinkInfiniBand}, {Name: "", Port: 1, MTU: verbs.MTU256}}))
	f.Fuzz(func(t *testing.T, b []byte) {
		nics, err := decodeEngineBlob(b)
		if err != nil {
			require.ErrorIs(t, err, core.ErrMalformed)
			return
		}
		require.Equal(t, b, encodeEngineBlob(nics))
	})
}

func FuzzNotification(f *testing.F) {
	n := notification{Op: core.OpWrite, UID: 7, Instance: 8, Parts: 4, MemID: 3}
	f.Add(n.encode(nil))
	n.Op = core.OpRead
	f.Add(n.encode(nil))
	f.Fuzz(func(t *testing.T, b []byte) {
		got, err := decodeNotification(b)
		if err != nil {
			require.ErrorIs(t, err, core.ErrMalformed)
			return
		}
		require.Equal(t, b, got.encode(nil))
	})
}
