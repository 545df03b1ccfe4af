package ipc

import (
	"encoding/binary"
	"fmt"

	"github.com/mori-go/mori-go/core"
)

// The memory blob (core.BackendXGMI in a MemoryDesc) of GPU memory that
// can be shared: version u8 | IPC handle [64] | offset u64 (LE), the
// handle naming the allocation that holds the memory and offset where the
// registered pointer lies in it. Handles always name allocation bases
// (MORI bug #415: a handle made from an interior pointer opens at the
// base), so the importer adds offset itself.
const (
	blobVersion = 1
	blobLen     = 1 + core.IPCHandleSize + 8
)

func encodeBlob(h [core.IPCHandleSize]byte, off uint64) []byte {
	b := make([]byte, 0, blobLen)
	b = append(b, blobVersion)
	b = append(b, h[:]...)
	return binary.LittleEndian.AppendUint64(b, off)
}

func decodeBlob(b []byte) (h [core.IPCHandleSize]byte, off uint64, err error) {
	if len(b) != blobLen || b[0] != blobVersion {
		return h, 0, fmt.Errorf("%w: same-host memory blob of %d bytes, version %d (want %d bytes, version %d)",
			core.ErrMalformed, len(b), firstByte(b), blobLen, blobVersion)
	}
	copy(h[:], b[1:])
	return h, binary.LittleEndian.Uint64(b[1+core.IPCHandleSize:]), nil
}

func firstByte(b []byte) int {
	if len(b) == 0 {
		return -1
	}
	return int(b[0])
}

// Control messages, over the engines' control plane (core.ControlHandler):
//
//	OPEN  (importer to exporter, before it maps a memory):
//	      op u8 = 1 | memory id u32 | token [16] | size u64 | offset u64 |
//	      handle [64] | control port u16 | host length u8 | host
//	      The exporter checks that the memory is still registered, that the
//	      token is the registration's (core.Registry.Resolve) and that size,
//	      offset and handle are its own, and records the importer
//	      (at host:port) so that it can tell it when the memory goes away.
//	CLOSE (exporter to importer, when the memory is deregistered or the
//	      exporter closes): op u8 = 2 | memory id u32
//	      The importer waits for its copies on the mapping to end, unmaps
//	      it, and answers: after that it never touches the memory again.
//
// Answers are empty; refusals travel as control-plane errors.
const (
	opOpen  = 1
	opClose = 2

	openFixedLen = 1 + 4 + core.TokenLen + 8 + 8 + core.IPCHandleSize + 2 + 1
	closeLen     = 1 + 4
)

type openMsg struct {
	Mem    uint32
	Token  core.Token
	Size   uint64
	Offset uint64
	Handle [core.IPCHandleSize]byte
	Port   uint16
	Host   string
}

func (m *openMsg) encode() []byte {
	b := make([]byte, 0, openFixedLen+len(m.Host))
	b = append(b, opOpen)
	b = binary.LittleEndian.AppendUint32(b, m.Mem)
	b = append(b, m.Token[:]...)
	b = binary.LittleEndian.AppendUint64(b, m.Size)
	b = binary.LittleEndian.AppendUint64(b, m.Offset)
	b = append(b, m.Handle[:]...)
	b = binary.LittleEndian.AppendUint16(b, m.Port)
	b = append(b, byte(len(m.Host)))
	return append(b, m.Host...)
}

func decodeOpen(b []byte) (openMsg, error) {
	var m openMsg
	if len(b) < openFixedLen || b[0] != opOpen {
		return m, fmt.Errorf("%w: same-host OPEN of %d bytes", core.ErrMalformed, len(b))
	}
	p := b[1:]
	m.Mem = binary.LittleEndian.Uint32(p)
	copy(m.Token[:], p[4:])
	p = p[core.TokenLen:]
	m.Size = binary.LittleEndian.Uint64(p[4:])
	m.Offset = binary.LittleEndian.Uint64(p[12:])
	copy(m.Handle[:], p[20:])
	p = p[20+core.IPCHandleSize:]
	m.Port = binary.LittleEndian.Uint16(p)
	n := int(p[2])
	if len(p) != 3+n {
		return m, fmt.Errorf("%w: same-host OPEN: host of %d bytes in %d", core.ErrMalformed, n, len(p)-3)
	}
	m.Host = string(p[3:])
	return m, nil
}

func encodeClose(mem uint32) []byte {
	return binary.LittleEndian.AppendUint32([]byte{opClose}, mem)
}

func decodeClose(b []byte) (uint32, error) {
	if len(b) != closeLen || b[0] != opClose {
		return 0, fmt.Errorf("%w: same-host CLOSE of %d bytes", core.ErrMalformed, len(b))
	}
	return binary.LittleEndian.Uint32(b[1:]), nil
}
