package ipc

import (
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/mori-go/mori-go/core"
)

func TestBlobRoundTrip(t *testing.T) {
	var h [core.IPCHandleSize]byte
	for i := range h {
		h[i] = byte(i * 3)
	}
	b := encodeBlob(h, 1<<40+5)
	require.Len(t, b, blobLen)
	gh, off, err := decodeBlob(b)
	require.NoError(t, err)
	require.Equal(t, h, gh)
	require.Equal(t, uint64(1<<40+5), off)

	for _, bad := range [][]byte{nil, b[:blobLen-1], append(append([]byte(nil), b...), 0), append([]byte{9}, b[1:]...)} {
		_, _, err := decodeBlob(bad)
		require.ErrorIs(t, err, core.ErrMalformed)
	}
}

func TestMessagesRoundTrip(t *testing.T) {
	m := openMsg{Mem: 7, Token: core.Token{9, 8, 7}, Size: 1 << 30, Offset: 4096, Port: 5555, Host: "10.0.0.1"}
	m.Handle[0], m.Handle[63] = 1, 2
	got, err := decodeOpen(m.encode())
	require.NoError(t, err)
	require.Equal(t, m, got)

	enc := m.encode()
	for _, bad := range [][]byte{nil, {opOpen}, enc[:len(enc)-1], append(enc, 'x'), append([]byte{opClose}, enc[1:]...)} {
		_, err := decodeOpen(bad)
		require.ErrorIs(t, err, core.ErrMalformed)
	}

	mem, err := decodeClose(encodeClose(42))
	require.NoError(t, err)
	require.Equal(t, uint32(42), mem)
	for _, bad := range [][]byte{nil, {opClose, 1, 2, 3}, {opOpen, 1, 2, 3, 4}, {opClose, 1, 2, 3, 4, 5}} {
		_, err := decodeClose(bad)
		require.ErrorIs(t, err, core.ErrMalformed)
	}
}

// fakeGPU is enough of a driver for New and HandleControl.
type fakeGPU struct{ core.GPU }

func (fakeGPU) IPCExport(uintptr) ([core.IPCHandleSize]byte, uint64, error) {
	return [core.IPCHandleSize]byte{}, 0, nil
}
func (fakeGPU) IPCMap([core.IPCHandleSize]byte, int) (uintptr, uint64, func() error, error) {
	return 0, 0, nil, nil
}
func (fakeGPU) CopyDeviceBatch(int, []core.DeviceCopy) error { return nil }

func TestHandleControlRefusesBadMessages(t *testing.T) {
	_, err := New(core.BackendEnv{}, Options{})
	require.ErrorContains(t, err, "cannot share memory")

	reg := core.NewRegistry()
	b, err := New(core.BackendEnv{LocalKey: "me", Registry: reg, GPU: fakeGPU{}}, Options{})
	require.NoError(t, err)
	defer b.Close()
	for _, msg := range [][]byte{nil, {0}, {opOpen, 1}, {opClose}, {99}} {
		_, err := b.HandleControl("peer", msg)
		require.Error(t, err, "%x", msg)
	}
	// OPEN of memory that is not registered, or registered but not exported.
	_, err = b.HandleControl("peer", (&openMsg{Mem: 1, Size: 10}).encode())
	require.ErrorContains(t, err, "memory 1 is not registered")
	r, err := reg.Add(0x10000, 4096, core.LocationGPU, 0, false)
	require.NoError(t, err)
	_, err = b.HandleControl("peer", (&openMsg{Mem: r.ID, Token: r.Token(), Size: 4096}).encode())
	require.ErrorContains(t, err, "not exported")
	blob, err := b.RegisterMemory(r)
	require.NoError(t, err)
	require.Equal(t, core.BackendXGMI, blob.Type)
	_, err = b.HandleControl("peer", (&openMsg{Mem: r.ID, Token: r.Token(), Size: 4096}).encode())
	require.NoError(t, err)
	_, err = b.HandleControl("peer", (&openMsg{Mem: r.ID, Token: r.Token(), Size: 8192}).encode())
	require.ErrorContains(t, err, "not this engine's registration")
	// CLOSE of something never opened is answered.
	_, err = b.HandleControl("peer", encodeClose(5))
	require.NoError(t, err)
}

// A stranger who knows the engine, the memory id, size, offset and even the
// IPC handle, but not the token, is refused before it is recorded as an
// opener; so is a token of another registration, and one of a
// deregistered region.
func TestOpenRefusedWithoutToken(t *testing.T) {
	reg := core.NewRegistry()
	b, err := New(core.BackendEnv{LocalKey: "me", Registry: reg, GPU: fakeGPU{}}, Options{})
	require.NoError(t, err)
	defer b.Close()
	a, err := reg.Add(0x10000, 4096, core.LocationGPU, 0, false)
	require.NoError(t, err)
	other, err := reg.Add(0x20000, 4096, core.LocationGPU, 0, false)
	require.NoError(t, err)
	for _, r := range []*core.Region{a, other} {
		_, err := b.RegisterMemory(r)
		require.NoError(t, err)
	}
	openers := func(r *core.Region) int {
		x, ok := b.exports.Load(r)
		require.True(t, ok)
		x.mu.Lock()
		defer x.mu.Unlock()
		return len(x.openers)
	}
	for name, tok := range map[string]core.Token{"no token": {}, "token of region B": other.Token(), "guessed": {1, 2, 3, 4}} {
		_, err := b.HandleControl("stranger", (&openMsg{Mem: a.ID, Token: tok, Size: 4096}).encode())
		require.ErrorIs(t, err, core.ErrAccessDenied, name)
		require.Equal(t, 0, openers(a), name)
	}
	require.Equal(t, uint64(3), reg.Denied())

	stale := other.Token()
	b.DeregisterMemory(other)
	_, err = reg.Remove(other.ID)
	require.NoError(t, err)
	_, err = b.HandleControl("stranger", (&openMsg{Mem: other.ID, Token: stale, Size: 4096}).encode())
	require.ErrorContains(t, err, "not registered")

	_, err = b.HandleControl("friend", (&openMsg{Mem: a.ID, Token: a.Token(), Size: 4096}).encode())
	require.NoError(t, err)
	require.Equal(t, 1, openers(a))
}

func FuzzDecodeOpen(f *testing.F) {
	m := openMsg{Mem: 7, Token: core.Token{1, 2, 3}, Size: 1 << 30, Offset: 4096, Port: 5555, Host: "10.0.0.1"}
	f.Add(m.encode())
	f.Add((&openMsg{}).encode())
	f.Add([]byte{opOpen})
	f.Add(encodeClose(3))
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := decodeOpen(b)
		if err != nil {
			require.ErrorIs(t, err, core.ErrMalformed)
			return
		}
		require.Equal(t, b, m.encode(), "what decodes re-encodes to the same bytes")
	})
}

func FuzzDecodeClose(f *testing.F) {
	f.Add(encodeClose(3))
	f.Add([]byte{opClose})
	f.Fuzz(func(t *testing.T, b []byte) {
		mem, err := decodeClose(b)
		if err != nil {
			require.ErrorIs(t, err, core.ErrMalformed)
			return
		}
		require.Equal(t, b, encodeClose(mem))
	})
}
