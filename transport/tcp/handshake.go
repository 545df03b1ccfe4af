package tcp

import (
	"bufio"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"io"

	"github.com/mori-go/mori-go/core"
)

// Handshake, before any frame:
//
//	target -> initiator  challenge: "MGT1" | nonce [16] | key length u16 | target key
//	initiator -> target  hello:     "MGH1" | key length u16 | initiator key |
//	                                key length u16 | target key | mac [32]
//	target -> initiator  verdict:   code u8 | message length u16 | message
//
// A success verdict's message lists what the target offers, separated by
// spaces (today only compressOffer); an initiator ignores what it does not
// know.
//
// mac is HMAC-SHA256(secret, nonce | initiator key | 0 | target key) when
// the engines share a secret, and zero bytes otherwise. A target with a
// secret refuses a hello whose mac does not match before it reads anything
// else.

const (
	challengeMagic = "MGT1"
	helloMagic     = "MGH1"
	nonceLen       = 16
	macLen         = sha256.Size
)

type challenge struct {
	Nonce [nonceLen]byte
	Key   string
}

func newChallenge(key string) (challenge, error) {
	c := challenge{Key: key}
	_, err := rand.Read(c.Nonce[:])
	return c, err
}

func (c *challenge) encode() []byte {
	b := append([]byte(challengeMagic), c.Nonce[:]...)
	b = binary.LittleEndian.AppendUint16(b, uint16(len(c.Key)))
	return append(b, c.Key...)
}

func readChallenge(r io.Reader) (challenge, error) {
	var c challenge
	var head [4 + nonceLen + 2]byte
	if _, err := io.ReadFull(r, head[:]); err != nil {
		return c, fmt.Errorf("read challenge: %w", err)
	}
	if string(head[:4]) != challengeMagic {
		return c, fmt.Errorf("read challenge: %w: not a mori-go data port (magic %q)", core.ErrMalformed, head[:4])
	}
	copy(c.Nonce[:], head[4:])
	key, err := readKey(r, binary.LittleEndian.Uint16(head[4+nonceLen:]))
	c.Key = key
	return c, err
}

func readKey(r io.Reader, n uint16) (string, error) {
	if n == 0 || int(n) > core.MaxKeyLen {
		return "", fmt.Errorf("%w: engine key of %d bytes, want 1..%d", core.ErrMalformed, n, core.MaxKeyLen)
	}
	b := make([]byte, n)
	if _, err := io.ReadFull(r, b); err != nil {
		return "", err
	}
	return string(b), nil
}

type hello struct {
	From, To string
	MAC      [macLen]byte
}

func helloMAC(secret []byte, nonce [nonceLen]byte, from, to string) [macLen]byte {
	var out [macLen]byte
	if len(secret) == 0 {
		return out
	}
	m := hmac.New(sha256.New, secret)
	m.Write(nonce[:])
	m.Write([]byte(from))
	m.Write([]byte{0})
	m.Write([]byte(to))
	copy(out[:], m.Sum(nil))
	return out
}

func (h *hello) encode() []byte {
	b := []byte(helloMagic)
	b = binary.LittleEndian.AppendUint16(b, uint16(len(h.From)))
	b = append(b, h.From...)
	b = binary.LittleEndian.AppendUint16(b, uint16(len(h.To)))
	b = append(b, h.To...)
	return append(b, h.MAC[:]...)
}

func readHello(r *bufio.Reader) (hello, error) {
	var h hello
	var head [6]byte
	if _, err := io.ReadFull(r, head[:]); err != nil {
		return h, fmt.Errorf("read hello: %w", err)
	}
	if string(head[:4]) != helloMagic {
		return h, fmt.Errorf("read hello: %w: bad magic %q", core.ErrMalformed, head[:4])
	}
	var err error
	if h.From, err = readKey(r, binary.LittleEndian.Uint16(head[4:])); err != nil {
		return h, fmt.Errorf("read hello: initiator key: %w", err)
	}
	var n [2]byte
	if _, err := io.ReadFull(r, n[:]); err != nil {
		return h, fmt.Errorf("read hello: %w", err)
	}
	if h.To, err = readKey(r, binary.LittleEndian.Uint16(n[:])); err != nil {
		return h, fmt.Errorf("read hello: target key: %w", err)
	}
	if _, err := io.ReadFull(r, h.MAC[:]); err != nil {
		return h, fmt.Errorf("read hello: mac: %w", err)
	}
	return h, nil
}

func encodeVerdict(code core.StatusCode, msg string) []byte {
	if len(msg) > maxMessageLen {
		msg = msg[:maxMessageLen]
	}
	b := []byte{uint8(code)}
	b = binary.LittleEndian.AppendUint16(b, uint16(len(msg)))
	return append(b, msg...)
}

func readVerdict(r io.Reader) error {
	_, err := readVerdictOffer(r)
	return err
}

// readVerdictOffer returns the message of a success verdict (what the
// target offers, see compressOffer) or the refusal as an error.
func readVerdictOffer(r io.Reader) (string, error) {
	var head [3]byte
	if _, err := io.ReadFull(r, head[:]); err != nil {
		return "", fmt.Errorf("read handshake verdict: %w", err)
	}
	n := binary.LittleEndian.Uint16(head[1:])
	if n > maxMessageLen {
		return "", fmt.Errorf("read handshake verdict: %w: message of %d bytes", core.ErrMalformed, n)
	}
	msg := make([]byte, n)
	if _, err := io.ReadFull(r, msg); err != nil {
		return "", fmt.Errorf("read handshake verdict: %w", err)
	}
	if code := core.StatusCode(head[0]); code != core.StatusSuccess {
		return "", core.Errorf(ErrRefusedCode(code), "peer refused the connection: %s", msg)
	}
	return string(msg), nil
}

// ErrRefusedCode maps a refusal code from the wire to a failure code.
func ErrRefusedCode(c core.StatusCode) core.StatusCode {
	if c.Failed() {
		return c
	}
	return core.ErrRemote
}
