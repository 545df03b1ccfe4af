package control

import (
	"bytes"
	"net"
	"strconv"
	"testing"
	"time"

	zmq "github.com/pebbe/zmq4"
	"github.com/stretchr/testify/require"

	"github.com/mori-go/mori-go/core"
)

// rawDealer is a DEALER socket sending arbitrary multipart messages.
func rawDealer(t *testing.T, s *Server) *zmq.Socket {
	t.Helper()
	sock, err := s.zmq.ctx.NewSocket(zmq.DEALER)
	require.NoError(t, err)
	t.Cleanup(func() { sock.Close() })
	require.NoError(t, sock.SetLinger(0))
	require.NoError(t, sock.SetRcvtimeo(callTimeout))
	require.NoError(t, sock.SetSndtimeo(callTimeout))
	require.NoError(t, sock.Connect("tcp://127.0.0.1:"+strconv.Itoa(s.Port())))
	return sock
}

func TestGarbageGetsAnErrorReplyAndTheServerGoesOn(t *testing.T) {
	for _, secret := range [][]byte{nil, []byte("k")} {
		s, h := listen(t, "target", secret)
		sock := rawDealer(t, s)
		desc, err := (&core.EngineDesc{Key: "x"}).MarshalBinary()
		require.NoError(t, err)
		garbage := [][][]byte{
			{{}},
			{[]byte("PING")},
			{[]byte("PING"), nil, nil, nil},
			{bytes.Repeat([]byte("K"), 17), nil},
			{[]byte("HELLO"), []byte("garbage")},
			{[]byte("HELLO"), append(desc, 0)},
			{[]byte("HELLO"), desc[:len(desc)-1]},
			{[]byte("NOTIFY"), []byte{5}},
			{[]byte("NOTIFY"), []byte{0, 0, 'x'}},
			{[]byte("NOTIFY"), []byte{0xff, 0xff, 'x'}},
			{[]byte("BACKEND"), []byte{9, 0, 'a'}},
			{[]byte("WELCOME"), nil},
			{{0xff, 0xfe, 0x00}, {0x01}},
		}
		if secret != nil {
			for i := range garbage {
				if len(garbage[i]) == 2 {
					garbage[i] = append(garbage[i], make([]byte, 32)) // a bad MAC
				}
			}
		}
		for i, msg := range garbage {
			parts := make([]any, len(msg))
			for j, p := range msg {
				parts[j] = p
			}
			_, err := sock.SendMessage(parts...)
			require.NoError(t, err, "message %d", i)
			reply, err := sock.RecvMessageBytes(0)
			require.NoError(t, err, "no reply to garbage message %d", i)
			require.Equal(t, KindError, string(reply[0]), "message %d", i)
			require.NotEmpty(t, reply[1], "an error reply says why")
			if secret != nil {
				require.Len(t, reply, 3, "error replies are sealed too")
			}
		}
		require.Zero(t, h.calls(), "garbage never reaches the handler")

		// Still serving, on the same socket and on a new one.
		_, err = sock.SendMessage(seal(KindPing, nil, secret))
		require.NoError(t, err)
		reply, err := sock.RecvMessageBytes(0)
		require.NoError(t, err)
		require.Equal(t, KindPong, string(reply[0]))
		c := NewClient(s, secret)
		_, err = c.Hello("127.0.0.1", s.Port(), core.EngineDesc{Key: "x"}, callTimeout)
		require.NoError(t, err)
	}
}

func TestOversizedMessageDoesNotStopTheServer(t *testing.T) {
	s, h := listen(t, "target", nil)
	sock := rawDealer(t, s)
	// libzmq drops a peer that sends more than MaxMessage; no reply comes.
	_, err := sock.SendMessage("NOTIFY", make([]byte, 2*MaxMessage))
	require.NoError(t, err)
	_, err = NewClient(s, nil).Hello("127.0.0.1", s.Port(), core.EngineDesc{Key: "x"}, callTimeout)
	require.NoError(t, err)
	require.Equal(t, 1, h.calls())
}

func TestCallToAClosedPortTimesOut(t *testing.T) {
	s, _ := listen(t, "a", nil)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	port := ln.Addr().(*net.TCPAddr).Port
	require.NoError(t, ln.Close())

	const timeout = 200 * time.Millisecond
	done := make(chan error, 1)
	go func() {
		_, _, err := NewClient(s, nil).Call("127.0.0.1", port, KindPing, nil, timeout)
		done <- err
	}()
	select {
	case err := <-done:
		require.Error(t, err)
		require.Equal(t, core.ErrTimeout, core.CodeOf(err), "%v", err)
		require.ErrorContains(t, err, "no answer from")
	case <-time.After(timeout + callTimeout):
		t.Fatal("Call did not return after its timeout")
	}
}
