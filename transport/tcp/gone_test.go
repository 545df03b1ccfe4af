package tcp

import (
	"errors"
	"io"
	"net"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// tcpPair returns the two ends of a loopback TCP connection.
func tcpPair(t *testing.T) (client, server *net.TCPConn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	defer ln.Close()
	c, err := net.Dial("tcp", ln.Addr().String())
	require.NoError(t, err)
	s, err := ln.Accept()
	require.NoError(t, err)
	t.Cleanup(func() { c.Close(); s.Close() })
	return c.(*net.TCPConn), s.(*net.TCPConn)
}

// The bytes an initiator sent before it reset the connection are still in
// the target's kernel (Linux delivers them before ECONNRESET): goneReader
// refuses them rather than hand them over, however soon after the previous
// read it is asked.
func TestGoneReaderDropsWhatAResetInitiatorLeftBuffered(t *testing.T) {
	for _, c := range []struct {
		name  string
		reset bool
	}{{"reset", true}, {"closed", false}} {
		t.Run(c.name, func(t *testing.T) {
			cl, sv := tcpPair(t)
			_, err := cl.Write(make([]byte, 1000))
			require.NoError(t, err)
			if c.reset {
				require.NoError(t, cl.SetLinger(0))
			}
			require.NoError(t, cl.Close())
			r := newGoneReader(sv, sv)
			n, err := r.Read(make([]byte, 4096))
			require.Zero(t, n, "bytes of a connection the initiator gave up were handed over")
			require.True(t, errors.Is(err, errInitiatorGone), "got %v", err)
		})
	}
}

// A live connection is read as usual, after a pause or not.
func TestGoneReaderReadsALiveConnection(t *testing.T) {
	cl, sv := tcpPair(t)
	r := newGoneReader(sv, sv)
	buf := make([]byte, 4096)
	for round := 0; round < 2; round++ {
		_, err := cl.Write([]byte("hello"))
		require.NoError(t, err)
		if round == 1 {
			time.Sleep(100 * time.Millisecond)
		}
		sv.SetReadDeadline(time.Now().Add(5 * time.Second))
		n, err := r.Read(buf)
		require.NoError(t, err)
		require.Equal(t, "hello", string(buf[:n]))
	}
	require.NoError(t, cl.Close())
	sv.SetReadDeadline(time.Now().Add(5 * time.Second))
	_, err := r.Read(buf) // closed with nothing unread: plain EOF
	require.ErrorIs(t, err, io.EOF)
}
