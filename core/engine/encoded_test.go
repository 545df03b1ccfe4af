package engine_test

import (
	"crypto/rand"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/mori-go/mori-go/core"
	"github.com/mori-go/mori-go/core/engine"
)

func TestSubmitEncodedMovesBytesAndFailsWhatItCannotRead(t *testing.T) {
	a, b := pair(t, nil)
	src, dst := alloc(t, 4096), alloc(t, 4096)
	rand.Read(src.Bytes())
	sd, dd := register(t, a, src), register(t, b, dst)
	local, err := sd.MarshalBinary()
	require.NoError(t, err)
	remote, err := dd.MarshalBinary()
	require.NoError(t, err)
	ranges := []core.Range{{LocalOffset: 0, RemoteOffset: 0, Size: 4096}}
	sts := a.SubmitEncoded(core.OpWrite, []engine.EncodedRequest{
		{Local: local, Remote: remote, Ranges: ranges, UID: a.AllocateTransferUID()},
		{Local: []byte("not a descriptor"), Remote: remote, Ranges: ranges, UID: a.AllocateTransferUID()},
		{Local: local, Remote: remote[:len(remote)-1], Ranges: ranges, UID: a.AllocateTransferUID()},
		{Local: local, Remote: remote, UID: a.AllocateTransferUID(), Refused: core.Errorf(core.ErrInvalidArgs, "null sizes array")},
	})
	require.Len(t, sts, 4)
	require.Equal(t, core.StatusSuccess, sts[0].Wait(10*time.Second), sts[0].Message())
	require.Equal(t, src.Bytes(), dst.Bytes())
	for i, want := range []string{"transfer 1: local descriptor", "transfer 2: remote descriptor", "transfer 3: null sizes array"} {
		st := sts[i+1]
		require.Equal(t, core.ErrInvalidArgs, st.Code(), st.Message())
		require.Contains(t, st.Message(), want)
	}
}

func TestRegisterMemoryEncodedRegistersOnceWhateverTheBuffer(t *testing.T) {
	e := newEngine(t, "reg-once", nil)
	m := alloc(t, 4096)
	before := e.Registry().Len()
	small, err := e.RegisterMemoryEncoded(m.Addr(), 4096, -1, core.LocationCPU, core.RegionOptions{}, 4)
	require.Error(t, err)
	require.Equal(t, core.ErrInvalidArgs, core.CodeOf(err))
	require.Contains(t, err.Error(), "too small")
	require.Greater(t, len(small), 4, "the caller learns the size it needs")
	require.Equal(t, before+1, e.Registry().Len(), "registered, and kept")

	full, err := e.RegisterMemoryEncoded(m.Addr(), 4096, -1, core.LocationCPU, core.RegionOptions{}, len(small))
	require.NoError(t, err)
	require.Equal(t, small, full, "the retry returns the same registration")
	require.Equal(t, before+1, e.Registry().Len(), "not registered a second time")

	require.NoError(t, e.DeregisterMemoryEncoded(full))
	require.Equal(t, before, e.Registry().Len())
	again, err := e.RegisterMemoryEncoded(m.Addr(), 4096, -1, core.LocationCPU, core.RegionOptions{}, 4096)
	require.NoError(t, err)
	require.NotEqual(t, full, again, "once handed out, a new call is a new registration")
	require.NoError(t, e.DeregisterMemoryEncoded(again))
}

func TestPackNotificationsLayout(t *testing.T) {
	b := engine.PackNotifications([]engine.Notification{{From: "ab", Data: []byte{7}}, {From: "", Data: nil}})
	require.Equal(t, []byte{2, 0, 'a', 'b', 1, 0, 0, 0, 7, 0, 0, 0, 0, 0, 0}, b)
}
