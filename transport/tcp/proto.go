package tcp

import (
	"encoding/binary"
	"fmt"

	"github.com/mori-go/mori-go/core"
)

const (
	frameMagic    = 0x474d // "MG"
	reqHeaderLen  = 56
	entryLen      = 16
	respHeaderLen = 16

	reqWrite uint8 = 1
	reqRead  uint8 = 2

	respAck  uint8 = 0x81
	respData uint8 = 0x82

	// Limits the target enforces on what it reads from the network.
	maxEntries    = 1 << 16
	maxPayload    = 256 << 20
	maxMessageLen = 4096
)

// reqHeader is the fixed part of a request frame.
type reqHeader struct {
	Type     uint8
	Flags    uint8
	MemID    uint32
	UID      uint64
	Instance uint64
	Parts    uint32
	Entries  uint32
	Payload  uint64
	Token    core.Token // the memory's capability (core.Registry.Resolve)
}

func (h *reqHeader) put(b []byte) {
	binary.LittleEndian.PutUint16(b[0:], frameMagic)
	b[2] = h.Type
	b[3] = h.Flags
	binary.LittleEndian.PutUint32(b[4:], h.MemID)
	binary.LittleEndian.PutUint64(b[8:], h.UID)
	binary.LittleEndian.PutUint64(b[16:], h.Instance)
	binary.LittleEndian.PutUint32(b[24:], h.Parts)
	binary.LittleEndian.PutUint32(b[28:], h.Entries)
	binary.LittleEndian.PutUint64(b[32:], h.Payload)
	copy(b[40:reqHeaderLen], h.Token[:])
}

// parseReqHeader decodes and checks the fixed part of a request. An error
// means the stream is out of step or hostile and must be closed.
func parseReqHeader(b []byte) (reqHeader, error) {
	var h reqHeader
	if len(b) < reqHeaderLen {
		return h, fmt.Errorf("%w: request header of %d bytes", core.ErrMalformed, len(b))
	}
	if m := binary.LittleEndian.Uint16(b[0:]); m != frameMagic {
		return h, fmt.Errorf("%w: bad frame magic %#04x", core.ErrMalformed, m)
	}
	h.Type = b[2]
	h.Flags = b[3]
	h.MemID = binary.LittleEndian.Uint32(b[4:])
	h.UID = binary.LittleEndian.Uint64(b[8:])
	h.Instance = binary.LittleEndian.Uint64(b[16:])
	h.Parts = binary.LittleEndian.Uint32(b[24:])
	h.Entries = binary.LittleEndian.Uint32(b[28:])
	h.Payload = binary.LittleEndian.Uint64(b[32:])
	copy(h.Token[:], b[40:reqHeaderLen])
	switch h.Type {
	case reqWrite:
	case reqRead:
		if h.Payload != 0 {
			return h, fmt.Errorf("%w: read request carries %d payload bytes", core.ErrMalformed, h.Payload)
		}
	default:
		return h, fmt.Errorf("%w: unknown request type %d", core.ErrMalformed, h.Type)
	}
	if h.Entries == 0 || h.Entries > maxEntries {
		return h, fmt.Errorf("%w: %d entries in a frame, want 1..%d", core.ErrMalformed, h.Entries, maxEntries)
	}
	if h.Payload > maxPayload {
		return h, fmt.Errorf("%w: payload of %d bytes, at most %d", core.ErrMalformed, h.Payload, maxPayload)
	}
	return h, nil
}

// parseEntries decodes n entries from b and returns the sum of their sizes.
// It refuses a total past maxPayload; bounds against memory are checked by
// the caller.
func parseEntries(b []byte, out []core.Range) ([]core.Range, uint64, error) {
	out = out[:0]
	var total uint64
	for i := 0; i+entryLen <= len(b); i += entryLen {
		off := binary.LittleEndian.Uint64(b[i:])
		size := binary.LittleEndian.Uint64(b[i+8:])
		if size > maxPayload || total+size > maxPayload {
			return out, 0, fmt.Errorf("%w: entry %d: size %d takes the frame past %d bytes", core.ErrMalformed, i/entryLen, size, maxPayload)
		}
		total += size
		out = append(out, core.Range{RemoteOffset: off, Size: size})
	}
	return out, total, nil
}

func putEntry(b []byte, off, size uint64) {
	binary.LittleEndian.PutUint64(b[0:], off)
	binary.LittleEndian.PutUint64(b[8:], size)
}

type respHeader struct {
	Type    uint8
	Code    core.StatusCode
	MsgLen  uint32
	Payload uint64
}

func (h *respHeader) put(b []byte) {
	binary.LittleEndian.PutUint16(b[0:], frameMagic)
	b[2] = h.Type
	b[3] = uint8(h.Code)
	binary.LittleEndian.PutUint32(b[4:], h.MsgLen)
	binary.LittleEndian.PutUint64(b[8:], h.Payload)
}

func parseRespHeader(b []byte) (respHeader, error) {
	var h respHeader
	if len(b) < respHeaderLen {
		return h, fmt.Errorf("%w: response header of %d bytes", core.ErrMalformed, len(b))
	}
	if m := binary.LittleEndian.Uint16(b[0:]); m != frameMagic {
		return h, fmt.Errorf("%w: bad response magic %#04x", core.ErrMalformed, m)
	}
	h.Type = b[2]
	h.Code = core.StatusCode(b[3])
	h.MsgLen = binary.LittleEndian.Uint32(b[4:])
	h.Payload = binary.LittleEndian.Uint64(b[8:])
	if h.Type != respAck && h.Type != respData {
		return h, fmt.Errorf("%w: unknown response type %#x", core.ErrMalformed, h.Type)
	}
	if h.MsgLen > maxMessageLen {
		return h, fmt.Errorf("%w: response message of %d bytes, at most %d", core.ErrMalformed, h.MsgLen, maxMessageLen)
	}
	if h.Payload > maxPayload {
		return h, fmt.Errorf("%w: response payload of %d bytes, at most %d", core.ErrMalformed, h.Payload, maxPayload)
	}
	if h.Code != core.StatusSuccess && !h.Code.Failed() {
		return h, fmt.Errorf("%w: response code %d", core.ErrMalformed, h.Code)
	}
	return h, nil
}
