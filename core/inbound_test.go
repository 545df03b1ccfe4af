package core

import (
	"errors"
	"fmt"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestInboundLifecycle(t *testing.T) {
	tb := NewInboundTable(0)
	require.Equal(t, DefaultInboundCapacity, tb.cap)
	k := InboundKey{Peer: "a", UID: 1}
	_, ok := tb.Pop(k)
	require.False(t, ok)

	require.NoError(t, tb.Admit(k, 7, 2))
	require.NoError(t, tb.Admit(k, 7, 2))
	err := tb.Admit(k, 7, 2)
	require.ErrorContains(t, err, "more than the 2 parts declared")
	tb.Complete(k, 7, nil)
	st, ok := tb.Pop(k)
	require.True(t, ok)
	require.Equal(t, StatusInProgress, st.Code)
	_, ok = tb.Pop(k)
	require.True(t, ok, "an entry in progress stays")
	tb.Complete(k, 7, nil)
	st, ok = tb.Pop(k)
	require.True(t, ok)
	require.Equal(t, InboundStatus{Code: StatusSuccess}, st)
	_, ok = tb.Pop(k)
	require.False(t, ok, "pop frees a finished entry")
	require.Zero(t, tb.Len())
}

func TestInboundAdmitRefusals(t *testing.T) {
	tb := NewInboundTable(10)
	k := InboundKey{Peer: "a", UID: 1}
	require.ErrorContains(t, tb.Admit(k, 1, 0), "declares zero parts")
	require.Zero(t, tb.Len())
	require.NoError(t, tb.Admit(k, 1, 3))
	require.ErrorContains(t, tb.Admit(k, 1, 4), "part declares 4 parts, earlier parts declared 3")
}

func TestInboundFailureWins(t *testing.T) {
	tb := NewInboundTable(10)
	k := InboundKey{Peer: "a", UID: 1}
	require.NoError(t, tb.Admit(k, 1, 3))
	require.NoError(t, tb.Admit(k, 1, 3))
	require.NoError(t, tb.Admit(k, 1, 3))
	tb.Complete(k, 1, nil)
	tb.Complete(k, 1, Errorf(ErrGPUOp, "copy failed"))
	tb.Complete(k, 1, Errorf(ErrRemote, "second failure"))
	tb.Complete(k, 2, nil) // another instance: ignored
	st, ok := tb.Pop(k)
	require.True(t, ok)
	require.Equal(t, InboundStatus{Code: ErrGPUOp, Message: "copy failed"}, st)

	// A plain error (no status code) reads as invalid arguments, not as a
	// bug of this engine.
	require.NoError(t, tb.Admit(k, 3, 1))
	tb.Complete(k, 3, errors.New("unexpected EOF"))
	st, _ = tb.Pop(k)
	require.Equal(t, ErrInvalidArgs, st.Code)
}

func TestInboundDuplicateInstance(t *testing.T) {
	tb := NewInboundTable(10)
	k := InboundKey{Peer: "a", UID: 5}
	require.NoError(t, tb.Admit(k, 1, 2))
	err := tb.Admit(k, 2, 1)
	require.ErrorContains(t, err, `duplicate transfer uid 5 from "a"`)
	require.Equal(t, ErrInvalidArgs, CodeOf(err))
	// A refused part of the duplicate does not touch the run in progress.
	tb.Refuse(k, 2, 1, Errorf(ErrNotFound, "memory 9 is not registered"))
	require.NoError(t, tb.Admit(k, 1, 2))
	tb.Complete(k, 1, nil)
	tb.Complete(k, 1, nil)
	st, ok := tb.Pop(k)
	require.True(t, ok)
	require.Equal(t, StatusSuccess, st.Code)
}

func TestInboundFinishedEntryReplacedByNewInstance(t *testing.T) {
	tb := NewInboundTable(10)
	k := InboundKey{Peer: "a", UID: 5}
	require.NoError(t, tb.Admit(k, 1, 1))
	tb.Complete(k, 1, Errorf(ErrRemote, "old failure"))
	// Not popped; a new run of the uid replaces it.
	require.NoError(t, tb.Admit(k, 2, 1))
	st, _ := tb.Pop(k)
	require.Equal(t, StatusInProgress, st.Code)
	tb.Complete(k, 1, nil) // a late completion of the old run is ignored
	tb.Complete(k, 2, nil)
	st, _ = tb.Pop(k)
	require.Equal(t, InboundStatus{Code: StatusSuccess}, st)
	require.Zero(t, tb.Len())
}

func TestInboundRefuseRecordsTheError(t *testing.T) {
	tb := NewInboundTable(10)
	k := InboundKey{Peer: "a", UID: 5}
	tb.Refuse(k, 1, 0, Errorf(ErrNotFound, "memory 999 is not registered"))
	st, ok := tb.Pop(k)
	require.True(t, ok)
	require.Equal(t, InboundStatus{Code: ErrNotFound, Message: "memory 999 is not registered"}, st)

	// A refusal of a later part fails a run in progress, and the first
	// failure stays.
	require.NoError(t, tb.Admit(k, 2, 2))
	tb.Refuse(k, 2, 2, errors.New("entry 0: zero-length"))
	tb.Refuse(k, 2, 2, Errorf(ErrRemote, "later"))
	tb.Complete(k, 2, nil)
	st, _ = tb.Pop(k)
	require.Equal(t, InboundStatus{Code: ErrInvalidArgs, Message: "entry 0: zero-length"}, st)

	// A refused part of a new run replaces a finished, unpopped run: the
	// status must say the new run failed, not report the old success.
	require.NoError(t, tb.Admit(k, 3, 1))
	tb.Complete(k, 3, nil)
	tb.Refuse(k, 4, 1, Errorf(ErrNotFound, "memory 8 is not registered"))
	st, _ = tb.Pop(k)
	require.Equal(t, InboundStatus{Code: ErrNotFound, Message: "memory 8 is not registered"}, st)
}

func TestInboundFailPeer(t *testing.T) {
	tb := NewInboundTable(10)
	a1, a2, b1 := InboundKey{"a", 1}, InboundKey{"a", 2}, InboundKey{"b", 1}
	require.NoError(t, tb.Admit(a1, 1, 1))
	require.NoError(t, tb.Admit(a2, 1, 1))
	tb.Complete(a2, 1, nil)
	require.NoError(t, tb.Admit(b1, 1, 1))
	tb.FailPeer("a", "gone")
	st, _ := tb.Pop(a1)
	require.Equal(t, InboundStatus{Code: ErrConnection, Message: "gone"}, st)
	st, _ = tb.Pop(a2)
	require.Equal(t, StatusSuccess, st.Code, "finished entries keep their outcome")
	st, _ = tb.Pop(b1)
	require.Equal(t, StatusInProgress, st.Code)
}

func TestInboundIsBounded(t *testing.T) {
	tb := NewInboundTable(4)
	for i := 0; i < 10; i++ {
		require.NoError(t, tb.Admit(InboundKey{"a", uint64(i)}, 1, 1))
	}
	require.Equal(t, 4, tb.Len())
	require.Equal(t, uint64(6), tb.Dropped())
	for i := 0; i < 6; i++ {
		_, ok := tb.Pop(InboundKey{"a", uint64(i)})
		require.False(t, ok, "the oldest are evicted: %d", i)
	}
	for i := 6; i < 10; i++ {
		_, ok := tb.Pop(InboundKey{"a", uint64(i)})
		require.True(t, ok, "the newest stay: %d", i)
	}
	// A late completion of an evicted entry changes nothing.
	tb.Complete(InboundKey{"a", 0}, 1, nil)
	require.Equal(t, 4, tb.Len())
}

func TestInboundEvictsByAgeOfTheLiveEntry(t *testing.T) {
	tb := NewInboundTable(3)
	k := InboundKey{"a", 1}
	require.NoError(t, tb.Admit(k, 1, 1))
	tb.Complete(k, 1, nil)
	_, ok := tb.Pop(k)
	require.True(t, ok)
	require.NoError(t, tb.Admit(InboundKey{"a", 2}, 1, 1))
	require.NoError(t, tb.Admit(InboundKey{"a", 3}, 1, 1))
	require.NoError(t, tb.Admit(k, 2, 1)) // uid 1 again, now the newest
	require.NoError(t, tb.Admit(InboundKey{"a", 4}, 1, 1))
	// uid 2 was the oldest live entry; uid 1's first run left a stale slot
	// that must not evict its new run.
	_, ok = tb.Pop(InboundKey{"a", 2})
	require.False(t, ok)
	_, ok = tb.Pop(k)
	require.True(t, ok, "the newest run of uid 1 was evicted through a stale slot")
	require.Equal(t, uint64(1), tb.Dropped())
}

func TestInboundMemoryStaysBoundedWhenPopped(t *testing.T) {
	// The normal life of a table: entries admitted, completed and popped,
	// never reaching capacity. The eviction order must not grow with the
	// number of transfers ever seen.
	tb := NewInboundTable(1 << 16)
	for i := 0; i < 200000; i++ {
		k := InboundKey{Peer: "a", UID: uint64(i)}
		require.NoError(t, tb.Admit(k, uint64(i), 1))
		tb.Complete(k, uint64(i), nil)
		_, ok := tb.Pop(k)
		require.True(t, ok)
	}
	require.Zero(t, tb.Len())
	require.Less(t, len(tb.order)-tb.head, 4096, "eviction order leaks: %d slots for %d entries", len(tb.order)-tb.head, tb.Len())
}

func TestInboundEvictionUnderChurn(t *testing.T) {
	// Mixed admits, pops, replacements and evictions keep the invariants:
	// never more than capacity, never a panic, every live entry poppable.
	tb := NewInboundTable(64)
	for i := 0; i < 50000; i++ {
		k := InboundKey{Peer: fmt.Sprint("p", i%3), UID: uint64(i*7919) % 300}
		inst := uint64(i)
		if err := tb.Admit(k, inst, 1); err == nil {
			if i%5 != 0 {
				tb.Complete(k, inst, nil)
			}
		}
		if i%4 == 0 {
			tb.Pop(k)
		}
		require.LessOrEqual(t, tb.Len(), 64)
	}
	require.LessOrEqual(t, len(tb.order)-tb.head, 2*64+1025)
	live := 0
	for k, e := range tb.entries {
		found := false
		for _, sl := range tb.order[tb.head:] {
			if sl.key == k && sl.seq == e.seq {
				found = true
			}
		}
		require.True(t, found, "live entry %v has no slot", k)
		live++
	}
	require.Equal(t, tb.Len(), live)
}
