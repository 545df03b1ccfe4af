package core

import (
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

func flightTransfer(peer string, uid uint64) *Transfer {
	return &Transfer{Op: OpWrite, UID: uid, Peer: peer, Status: NewStatus()}
}

func TestFlightsTimeOutWhatDoesNotEnd(t *testing.T) {
	f := NewFlights(20 * time.Millisecond)
	var ts []*Transfer
	for i := range 5 {
		tr := flightTransfer("p", uint64(i))
		require.NoError(t, f.Add(tr))
		tr.Begin(1)
		ts = append(ts, tr)
	}
	ts[1].PartDone() // ends in time
	ts[3].Fail(ErrRemote, "refused")
	for i, tr := range ts {
		code := within(t, 10*time.Second, func() StatusCode { return tr.Status.Wait(-1) })
		switch i {
		case 1:
			require.Equal(t, StatusSuccess, code)
		case 3:
			require.Equal(t, ErrRemote, code)
		default:
			require.Equal(t, ErrTimeout, code, "transfer %d", i)
			require.Contains(t, tr.Status.Message(), "timed out after 20ms")
		}
	}
	require.Zero(t, f.Len(), "every transfer left the table")

	// The table keeps working once its timer has fired and found it empty.
	late := flightTransfer("p", 99)
	require.NoError(t, f.Add(late))
	require.Equal(t, ErrTimeout, within(t, 10*time.Second, func() StatusCode { return late.Status.Wait(-1) }))
	require.Zero(t, f.Len())
}

func TestFlightsRefuseAUidInFlight(t *testing.T) {
	f := NewFlights(time.Minute)
	a := flightTransfer("p", 7)
	require.NoError(t, f.Add(a))
	err := f.Add(flightTransfer("p", 7))
	require.Error(t, err)
	require.Equal(t, ErrInvalidArgs, CodeOf(err))
	require.Contains(t, err.Error(), `uid 7 to "p" is already in flight`)
	require.NoError(t, f.Add(flightTransfer("q", 7)), "the same uid to another peer is another transfer")
	a.Begin(0) // ends at once
	require.Equal(t, StatusSuccess, a.Status.Code())
	b := flightTransfer("p", 7)
	require.NoError(t, f.Add(b), "the uid is free again once its transfer ended")
	require.Equal(t, 2, f.Len())
	b.Fail(ErrRemote, "x")
	require.Equal(t, 1, f.Len())
}

// Transfers added and ended from many goroutines while others time out:
// the list stays consistent (run with -race).
func TestFlightsConcurrent(t *testing.T) {
	f := NewFlights(5 * time.Millisecond)
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 500 {
				tr := flightTransfer("p", uint64(g*1000+i))
				require.NoError(t, f.Add(tr))
				tr.Begin(1)
				if i%3 != 0 {
					tr.PartDone()
				}
			}
		}()
	}
	wg.Wait()
	within(t, 10*time.Second, func() bool {
		for f.Len() > 0 {
			time.Sleep(time.Millisecond)
		}
		return true
	})
	f.mu.Lock()
	defer f.mu.Unlock()
	require.Nil(t, f.head)
	require.Nil(t, f.tail)
}
