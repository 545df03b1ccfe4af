package tcp

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/mori-go/mori-go/core"
)

func TestRequestHeaderRoundTrip(t *testing.T) {
	h := reqHeader{Type: reqWrite, Flags: 3, MemID: 7, UID: 1 << 40, Instance: 99, Parts: 12, Entries: maxEntries, Payload: maxPayload}
	b := make([]byte, reqHeaderLen)
	h.put(b)
	got, err := parseReqHeader(b)
	require.NoError(t, err)
	require.Equal(t, h, got)

	_, err = parseReqHeader(b[:reqHeaderLen-1])
	require.ErrorIs(t, err, core.ErrMalformed)
}

func TestResponseHeaderRoundTrip(t *testing.T) {
	for _, h := range []respHeader{
		{Type: respAck, Code: core.StatusSuccess},
		{Type: respData, Code: core.StatusSuccess, Payload: maxPayload},
		{Type: respAck, Code: core.ErrNotFound, MsgLen: maxMessageLen},
	} {
		b := make([]byte, respHeaderLen)
		h.put(b)
		got, err := parseRespHeader(b)
		require.NoError(t, err)
		require.Equal(t, h, got)
	}
}

func TestParseEntries(t *testing.T) {
	b := make([]byte, 3*entryLen)
	putEntry(b, 1, 2)
	putEntry(b[entryLen:], 3, 0)
	putEntry(b[2*entryLen:], ^uint64(0), 5)
	rs, total, err := parseEntries(b, make([]core.Range, 7))
	require.NoError(t, err)
	require.Equal(t, uint64(7), total)
	require.Equal(t, []core.Range{{RemoteOffset: 1, Size: 2}, {RemoteOffset: 3}, {RemoteOffset: ^uint64(0), Size: 5}}, rs)

	putEntry(b[entryLen:], 0, maxPayload)
	_, _, err = parseEntries(b, nil)
	require.ErrorContains(t, err, "entry 1: size 268435456 takes the frame past")
	putEntry(b[entryLen:], 0, ^uint64(0))
	_, _, err = parseEntries(b, nil)
	require.ErrorIs(t, err, core.ErrMalformed)
}

func TestHandshakeMessagesRoundTrip(t *testing.T) {
	ch, err := newChallenge("target")
	require.NoError(t, err)
	got, err := readChallenge(bytes.NewReader(ch.encode()))
	require.NoError(t, err)
	require.Equal(t, ch, got)

	h := hello{From: "a", To: "b", MAC: helloMAC([]byte("k"), ch.Nonce, "a", "b")}
	gh, err := readHello(bufio.NewReader(bytes.NewReader(h.encode())))
	require.NoError(t, err)
	require.Equal(t, h, gh)
	require.Equal(t, [macLen]byte{}, helloMAC(nil, ch.Nonce, "a", "b"), "no secret, no MAC")
	require.NotEqual(t, helloMAC([]byte("k"), ch.Nonce, "ab", ""), helloMAC([]byte("k"), ch.Nonce, "a", "b"), "keys are separated")

	require.NoError(t, readVerdict(bytes.NewReader(encodeVerdict(core.StatusSuccess, ""))))
	err = readVerdict(bytes.NewReader(encodeVerdict(core.ErrNotFound, "nope")))
	require.ErrorContains(t, err, "peer refused the connection: nope")
	require.Equal(t, core.ErrNotFound, core.CodeOf(err))
	err = readVerdict(bytes.NewReader(encodeVerdict(core.StatusInProgress, "odd")))
	require.Equal(t, core.ErrRemote, core.CodeOf(err), "a refusal with a non-failure code is still a refusal")
	long := bytes.Repeat([]byte("m"), 2*maxMessageLen)
	err = readVerdict(bytes.NewReader(encodeVerdict(core.ErrInvalidArgs, string(long))))
	require.ErrorContains(t, err, string(long[:maxMessageLen]))
}

// Fuzz targets for every decoder of bytes from the network. Each checks
// that the decoder never panics, wraps ErrMalformed (or an I/O error) when
// it refuses, and that what it accepts re-encodes to the bytes it read.

func FuzzParseReqHeader(f *testing.F) {
	for _, h := range []reqHeader{
		{Type: reqWrite, MemID: 1, UID: 2, Instance: 3, Parts: 1, Entries: 1, Payload: 16},
		{Type: reqRead, MemID: 1, Entries: maxEntries},
		{Type: reqWrite, Entries: 0},
		{Type: reqRead, Entries: 1, Payload: 1},
	} {
		b := make([]byte, reqHeaderLen)
		h.put(b)
		f.Add(b)
	}
	f.Add([]byte("MG"))
	f.Fuzz(func(t *testing.T, b []byte) {
		h, err := parseReqHeader(b)
		if err != nil {
			require.ErrorIs(t, err, core.ErrMalformed)
			return
		}
		require.GreaterOrEqual(t, len(b), reqHeaderLen)
		require.True(t, h.Type == reqWrite || h.Type == reqRead)
		require.True(t, h.Entries >= 1 && h.Entries <= maxEntries)
		require.LessOrEqual(t, h.Payload, uint64(maxPayload))
		if h.Type == reqRead {
			require.Zero(t, h.Payload)
		}
		enc := make([]byte, reqHeaderLen)
		h.put(enc)
		require.Equal(t, b[:reqHeaderLen], enc)
	})
}

func FuzzParseEntries(f *testing.F) {
	b := make([]byte, 2*entryLen)
	putEntry(b, 0, 4096)
	putEntry(b[entryLen:], 8192, 1)
	f.Add(b)
	putEntry(b[entryLen:], ^uint64(0), maxPayload)
	f.Add(b)
	f.Add(b[:entryLen+3])
	f.Fuzz(func(t *testing.T, b []byte) {
		rs, total, err := parseEntries(b, nil)
		if err != nil {
			require.ErrorIs(t, err, core.ErrMalformed)
			return
		}
		require.Len(t, rs, len(b)/entryLen)
		require.LessOrEqual(t, total, uint64(maxPayload))
		var sum uint64
		enc := make([]byte, len(rs)*entryLen)
		for i, r := range rs {
			sum += r.Size
			putEntry(enc[i*entryLen:], r.RemoteOffset, r.Size)
		}
		require.Equal(t, total, sum)
		require.Equal(t, b[:len(enc)], enc)
	})
}

func FuzzParseRespHeader(f *testing.F) {
	for _, h := range []respHeader{
		{Type: respAck, Code: core.StatusSuccess},
		{Type: respData, Code: core.StatusSuccess, Payload: 4096},
		{Type: respAck, Code: core.ErrNotFound, MsgLen: 30},
		{Type: respAck, Code: core.StatusInProgress},
		{Type: respData, MsgLen: maxMessageLen + 1},
	} {
		b := make([]byte, respHeaderLen)
		h.put(b)
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		h, err := parseRespHeader(b)
		if err != nil {
			require.ErrorIs(t, err, core.ErrMalformed)
			return
		}
		require.True(t, h.Type == respAck || h.Type == respData)
		require.LessOrEqual(t, h.MsgLen, uint32(maxMessageLen))
		require.LessOrEqual(t, h.Payload, uint64(maxPayload))
		require.True(t, h.Code == core.StatusSuccess || h.Code.Failed())
		enc := make([]byte, respHeaderLen)
		h.put(enc)
		require.Equal(t, b[:respHeaderLen], enc)
	})
}

// ioOrMalformed accepts the errors a handshake reader may give: a short
// input or a malformed one.
func ioOrMalformed(t *testing.T, err error) {
	t.Helper()
	if !errors.Is(err, core.ErrMalformed) && !errors.Is(err, io.EOF) && !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Fatalf("unexpected error %v", err)
	}
}

func FuzzReadChallenge(f *testing.F) {
	ch := challenge{Key: "target"}
	f.Add(ch.encode())
	f.Add([]byte("MGT1"))
	f.Add(append([]byte("MGT1"), make([]byte, nonceLen+2)...))
	f.Fuzz(func(t *testing.T, b []byte) {
		r := bytes.NewReader(b)
		c, err := readChallenge(r)
		if err != nil {
			ioOrMalformed(t, err)
			return
		}
		require.NotEmpty(t, c.Key)
		require.LessOrEqual(t, len(c.Key), core.MaxKeyLen)
		consumed := len(b) - r.Len()
		require.Equal(t, b[:consumed], c.encode())
	})
}

func FuzzReadHello(f *testing.F) {
	h := hello{From: "initiator", To: "target"}
	f.Add(h.encode())
	h.MAC = helloMAC([]byte("k"), [nonceLen]byte{1}, h.From, h.To)
	f.Add(h.encode())
	f.Add([]byte("MGH1\x00\x00"))
	f.Add([]byte("MGH1\xff\xff"))
	f.Fuzz(func(t *testing.T, b []byte) {
		r := bytes.NewReader(b)
		br := bufio.NewReaderSize(r, 16)
		got, err := readHello(br)
		if err != nil {
			ioOrMalformed(t, err)
			return
		}
		require.NotEmpty(t, got.From)
		require.NotEmpty(t, got.To)
		require.LessOrEqual(t, len(got.From), core.MaxKeyLen)
		require.LessOrEqual(t, len(got.To), core.MaxKeyLen)
		consumed := len(b) - r.Len() - br.Buffered()
		require.Equal(t, b[:consumed], got.encode())
	})
}

func FuzzReadVerdict(f *testing.F) {
	f.Add(encodeVerdict(core.StatusSuccess, ""))
	f.Add(encodeVerdict(core.ErrInvalidArgs, "authentication failed"))
	f.Add([]byte{0, 0xff, 0xff})
	f.Fuzz(func(t *testing.T, b []byte) {
		err := readVerdict(bytes.NewReader(b))
		if err == nil {
			require.GreaterOrEqual(t, len(b), 3)
			require.Zero(t, b[0])
			return
		}
		var refusal *core.Error
		if errors.As(err, &refusal) {
			require.True(t, refusal.Code.Failed(), "%v", refusal.Code)
			require.NotZero(t, b[0])
			return
		}
		ioOrMalformed(t, err)
	})
}
