package rdma

//go:generate go tool stringer -type=msgType -linecomment -output=msgtype_string.go

import (
	"encoding/binary"
	"errors"
	"fmt"

	"github.com/mori-go/mori-go/core"
	"github.com/mori-go/mori-go/verbs"
)

// Wire formats of the RDMA backend, all little-endian and versioned. Every
// decoder here reads bytes from the network: it is bounded by its input,
// refuses anything malformed with an error wrapping core.ErrMalformed, and
// is fuzzed.
//
// Control messages (over the engine's control plane, see HandleControl):
//
//	header: "MGR" | version u8 | type u8
//	CONNECT    flags u8 | n u8 | n × (qp index u8 | endpoint)
//	CONNECTED  n u8 | n × (qp index u8 | endpoint)
//	MR_QUERY   memory id u32 | token [16] | size u64
//	MR_INFO    memory blob (u16 length, bytes)
//	DISCONNECT (empty)
//	OK         (empty)
//	ABORT      n u16 | n × (uid u64 | instance u64 | parts u32) | reason length u16 | reason
//
//	endpoint:  qpn u32 | psn u32 | gid [16] | lid u16 | port u8 | mtu u8 | link u8 | nic u8 |
//	           read depth u8 (1..16: the RDMA READs its QP serves at once as responder)
//
// Memory blob (in MemoryDesc):  version u8 | n u8 | n × (rkey u32 | iova u64)
// Engine blob (in EngineDesc):  version u8 | n u8 | n × (gid [16] | lid u16 | port u8 |
// mtu u8 | link u8 | name length u8 | name)
// Notification (a SEND after a transfer's work requests on each QP):
//
//	magic u16 | version u8 | op u8 | uid u64 | instance u64 | parts u32 | memory id u32

const (
	protoMagic = "MGR"
	// protoVersion 2 added the memory token to MR_QUERY, 3 the read depth
	// to the endpoint.
	protoVersion = 3
	blobVersion  = 1

	// MaxQPsPerPeer bounds qp_per_transfer and the QPs a peer may ask for.
	MaxQPsPerPeer = 64
	// MaxNICs bounds the NICs one engine uses.
	MaxNICs       = 16
	endpointLen   = 31
	maxReadDepth  = 16
	notifyMagic   = 0x474d // "MG"
	notifyLen     = 28
	maxDeviceName = 64
)

type msgType uint8

const (
	msgConnect    msgType = 1 // CONNECT
	msgConnected  msgType = 2 // CONNECTED
	msgMRQuery    msgType = 3 // MR_QUERY
	msgMRInfo     msgType = 4 // MR_INFO
	msgDisconnect msgType = 5 // DISCONNECT
	msgOK         msgType = 6 // OK
	msgAbort      msgType = 7 // ABORT
)

// Bounds of an ABORT message.
const (
	maxAborts = 1024
	maxReason = 1024
)

// abortEntry names a transfer the initiator gave up on.
type abortEntry struct {
	UID      uint64
	Instance uint64
	Parts    uint32
}

// connectFull in CONNECT's flags: the message names every QP of the peer,
// and QPs it does not name are dropped. Without it, only the named QPs are
// (re)connected.
const connectFull = 1

// Endpoint is one side of a queue pair as its peer needs to know it.
type Endpoint struct {
	QPN  uint32
	PSN  uint32
	GID  verbs.GID
	LID  uint16
	Port uint8
	MTU  verbs.MTU
	Link verbs.LinkLayer
	NIC  uint8 // index of the NIC in the sender's list
	// ReadDepth is the RDMA READs (and atomics) the QP serves at once as a
	// responder (its max_dest_rd_atomic): the peer's initiator depth
	// (max_rd_atomic) must not exceed it.
	ReadDepth uint8
}

// qpEndpoint is an endpoint of the QP with a given index in a peer's set.
type qpEndpoint struct {
	Index uint8
	Endpoint
}

// message is one decoded control message.
type message struct {
	Type      msgType
	Flags     uint8
	Endpoints []qpEndpoint
	MemID     uint32
	Token     core.Token // MR_QUERY: the memory's capability (core.Registry.Resolve)
	Size      uint64
	Blob      []byte
	Aborts    []abortEntry
	Reason    string
}

type writer struct{ b []byte }

func (w *writer) u8(v uint8)   { w.b = append(w.b, v) }
func (w *writer) u16(v uint16) { w.b = binary.LittleEndian.AppendUint16(w.b, v) }
func (w *writer) u32(v uint32) { w.b = binary.LittleEndian.AppendUint32(w.b, v) }
func (w *writer) u64(v uint64) { w.b = binary.LittleEndian.AppendUint64(w.b, v) }

type reader struct {
	what string
	b    []byte
	off  int
	err  error
}

func (r *reader) fail(format string, args ...any) {
	if r.err == nil {
		r.err = fmt.Errorf("%s: %w: at byte %d: %s", r.what, core.ErrMalformed, r.off, fmt.Sprintf(format, args...))
	}
}

func (r *reader) take(n int, field string) []byte {
	if r.err != nil {
		return nil
	}
	if n < 0 || len(r.b)-r.off < n {
		r.fail("%s: need %d bytes, %d left", field, n, len(r.b)-r.off)
		return nil
	}
	v := r.b[r.off : r.off+n]
	r.off += n
	return v
}

func (r *reader) u8(field string) uint8 {
	if b := r.take(1, field); b != nil {
		return b[0]
	}
	return 0
}

func (r *reader) u16(field string) uint16 {
	if b := r.take(2, field); b != nil {
		return binary.LittleEndian.Uint16(b)
	}
	return 0
}

func (r *reader) u32(field string) uint32 {
	if b := r.take(4, field); b != nil {
		return binary.LittleEndian.Uint32(b)
	}
	return 0
}

func (r *reader) u64(field string) uint64 {
	if b := r.take(8, field); b != nil {
		return binary.LittleEndian.Uint64(b)
	}
	return 0
}

func (r *reader) end() error {
	if r.err == nil && r.off != len(r.b) {
		r.fail("%d trailing bytes", len(r.b)-r.off)
	}
	return r.err
}

func (w *writer) endpoint(e Endpoint) {
	w.u32(e.QPN)
	w.u32(e.PSN)
	w.b = append(w.b, e.GID[:]...)
	w.u16(e.LID)
	w.u8(e.Port)
	w.u8(uint8(e.MTU))
	w.u8(uint8(e.Link))
	w.u8(e.NIC)
	w.u8(e.ReadDepth)
}

func (r *reader) endpoint() Endpoint {
	var e Endpoint
	e.QPN = r.u32("qpn")
	e.PSN = r.u32("psn")
	copy(e.GID[:], r.take(16, "gid"))
	e.LID = r.u16("lid")
	e.Port = r.u8("port")
	e.MTU = verbs.MTU(r.u8("mtu"))
	e.Link = verbs.LinkLayer(r.u8("link layer"))
	e.NIC = r.u8("nic")
	e.ReadDepth = r.u8("read depth")
	if r.err != nil {
		return e
	}
	switch {
	case e.QPN == 0 || e.QPN >= 1<<24:
		r.fail("qpn %d out of range", e.QPN)
	case e.PSN >= 1<<24:
		r.fail("psn %d out of range", e.PSN)
	case e.Port == 0:
		r.fail("port 0")
	case e.MTU.Bytes() == 0:
		r.fail("mtu %d", e.MTU)
	case e.Link > verbs.LinkEthernet:
		r.fail("link layer %d", e.Link)
	case e.NIC >= MaxNICs:
		r.fail("nic %d, at most %d", e.NIC, MaxNICs-1)
	case e.ReadDepth == 0 || e.ReadDepth > maxReadDepth:
		r.fail("read depth %d, want 1..%d", e.ReadDepth, maxReadDepth)
	}
	return e
}

// encode returns the wire form of m.
func (m *message) encode() []byte {
	w := writer{b: make([]byte, 0, 8+len(m.Endpoints)*(1+endpointLen)+len(m.Blob))}
	w.b = append(w.b, protoMagic...)
	w.u8(protoVersion)
	w.u8(uint8(m.Type))
	switch m.Type {
	case msgConnect, msgConnected:
		if m.Type == msgConnect {
			w.u8(m.Flags)
		}
		w.u8(uint8(len(m.Endpoints)))
		for _, e := range m.Endpoints {
			w.u8(e.Index)
			w.endpoint(e.Endpoint)
		}
	case msgMRQuery:
		w.u32(m.MemID)
		w.b = append(w.b, m.Token[:]...)
		w.u64(m.Size)
	case msgMRInfo:
		w.u16(uint16(len(m.Blob)))
		w.b = append(w.b, m.Blob...)
	case msgAbort:
		w.u16(uint16(len(m.Aborts)))
		for _, a := range m.Aborts {
			w.u64(a.UID)
			w.u64(a.Instance)
			w.u32(a.Parts)
		}
		w.u16(uint16(len(m.Reason)))
		w.b = append(w.b, m.Reason...)
	}
	return w.b
}

// decodeMessage parses a control message.
func decodeMessage(b []byte) (*message, error) {
	r := reader{what: "rdma control message", b: b}
	if string(r.take(3, "magic")) != protoMagic && r.err == nil {
		return nil, fmt.Errorf("rdma control message: %w: bad magic", core.ErrMalformed)
	}
	if v := r.u8("version"); r.err == nil && v != protoVersion {
		return nil, fmt.Errorf("rdma control message: %w: version %d, this build reads version %d", core.ErrMalformed, v, protoVersion)
	}
	m := &message{Type: msgType(r.u8("type"))}
	switch m.Type {
	case msgConnect, msgConnected:
		if m.Type == msgConnect {
			m.Flags = r.u8("flags")
			if m.Flags&^connectFull != 0 {
				r.fail("unknown flags %#x", m.Flags)
			}
		}
		n := int(r.u8("count"))
		if r.err == nil && (n == 0 || n > MaxQPsPerPeer) {
			r.fail("%d queue pairs, want 1..%d", n, MaxQPsPerPeer)
		}
		seen := make(map[uint8]bool)
		for i := 0; i < n && r.err == nil; i++ {
			idx := r.u8("qp index")
			if r.err == nil && (idx >= MaxQPsPerPeer || seen[idx]) {
				r.fail("qp index %d repeated or out of range", idx)
			}
			seen[idx] = true
			m.Endpoints = append(m.Endpoints, qpEndpoint{Index: idx, Endpoint: r.endpoint()})
		}
	case msgMRQuery:
		m.MemID = r.u32("memory id")
		copy(m.Token[:], r.take(core.TokenLen, "token"))
		m.Size = r.u64("size")
	case msgMRInfo:
		n := int(r.u16("blob length"))
		if r.err == nil && n > core.MaxBlobLen {
			r.fail("blob of %d bytes, at most %d", n, core.MaxBlobLen)
		}
		m.Blob = append([]byte(nil), r.take(n, "blob")...)
	case msgAbort:
		n := int(r.u16("count"))
		if r.err == nil && (n == 0 || n > maxAborts) {
			r.fail("%d transfers, want 1..%d", n, maxAborts)
		}
		for i := 0; i < n && r.err == nil; i++ {
			a := abortEntry{UID: r.u64("uid"), Instance: r.u64("instance"), Parts: r.u32("parts")}
			if r.err == nil && (a.Parts == 0 || a.Parts > MaxQPsPerPeer) {
				r.fail("%d parts, want 1..%d", a.Parts, MaxQPsPerPeer)
			}
			m.Aborts = append(m.Aborts, a)
		}
		l := int(r.u16("reason length"))
		if r.err == nil && l > maxReason {
			r.fail("reason of %d bytes, at most %d", l, maxReason)
		}
		m.Reason = string(r.take(l, "reason"))
	case msgDisconnect, msgOK:
	default:
		if r.err == nil {
			r.fail("unknown message type %d", m.Type)
		}
	}
	if err := r.end(); err != nil {
		return nil, err
	}
	return m, nil
}

// RemoteKey is where one NIC of the owner reaches a memory region.
type RemoteKey struct {
	RKey uint32
	IOVA uint64
}

func encodeMemoryBlob(keys []RemoteKey) []byte {
	w := writer{b: make([]byte, 0, 2+12*len(keys))}
	w.u8(blobVersion)
	w.u8(uint8(len(keys)))
	for _, k := range keys {
		w.u32(k.RKey)
		w.u64(k.IOVA)
	}
	return w.b
}

// decodeMemoryBlob parses the RDMA blob of a MemoryDesc.
func decodeMemoryBlob(b []byte) ([]RemoteKey, error) {
	r := reader{what: "rdma memory blob", b: b}
	if v := r.u8("version"); r.err == nil && v != blobVersion {
		return nil, fmt.Errorf("rdma memory blob: %w: version %d, this build reads version %d", core.ErrMalformed, v, blobVersion)
	}
	n := int(r.u8("count"))
	if r.err == nil && (n == 0 || n > MaxNICs) {
		r.fail("%d keys, want 1..%d", n, MaxNICs)
	}
	keys := make([]RemoteKey, 0, min(n, MaxNICs))
	for i := 0; i < n && r.err == nil; i++ {
		keys = append(keys, RemoteKey{RKey: r.u32("rkey"), IOVA: r.u64("iova")})
	}
	if err := r.end(); err != nil {
		return nil, err
	}
	return keys, nil
}

// NICInfo is what an engine publishes of one of its NICs.
type NICInfo struct {
	Name string
	GID  verbs.GID
	LID  uint16
	Port uint8
	MTU  verbs.MTU
	Link verbs.LinkLayer
}

func encodeEngineBlob(nics []NICInfo) []byte {
	w := writer{}
	w.u8(blobVersion)
	w.u8(uint8(len(nics)))
	for _, n := range nics {
		w.b = append(w.b, n.GID[:]...)
		w.u16(n.LID)
		w.u8(n.Port)
		w.u8(uint8(n.MTU))
		w.u8(uint8(n.Link))
		name := n.Name
		if len(name) > maxDeviceName {
			name = name[:maxDeviceName]
		}
		w.u8(uint8(len(name)))
		w.b = append(w.b, name...)
	}
	return w.b
}

// decodeEngineBlob parses the RDMA blob of an EngineDesc.
func decodeEngineBlob(b []byte) ([]NICInfo, error) {
	r := reader{what: "rdma engine blob", b: b}
	if v := r.u8("version"); r.err == nil && v != blobVersion {
		return nil, fmt.Errorf("rdma engine blob: %w: version %d, this build reads version %d", core.ErrMalformed, v, blobVersion)
	}
	n := int(r.u8("count"))
	if r.err == nil && (n == 0 || n > MaxNICs) {
		r.fail("%d NICs, want 1..%d", n, MaxNICs)
	}
	var nics []NICInfo
	for i := 0; i < n && r.err == nil; i++ {
		var x NICInfo
		copy(x.GID[:], r.take(16, "gid"))
		x.LID = r.u16("lid")
		x.Port = r.u8("port")
		x.MTU = verbs.MTU(r.u8("mtu"))
		x.Link = verbs.LinkLayer(r.u8("link layer"))
		l := int(r.u8("name length"))
		if r.err == nil && l > maxDeviceName {
			r.fail("device name of %d bytes", l)
		}
		x.Name = string(r.take(l, "name"))
		if r.err == nil && (x.Port == 0 || x.MTU.Bytes() == 0 || x.Link > verbs.LinkEthernet) {
			r.fail("nic %d: port %d mtu %d link %d", i, x.Port, x.MTU, x.Link)
		}
		nics = append(nics, x)
	}
	if err := r.end(); err != nil {
		return nil, err
	}
	return nics, nil
}

// notification is the payload of the SEND that tells the target a part of
// a transfer is complete on one QP.
type notification struct {
	Op       core.Op
	UID      uint64
	Instance uint64
	Parts    uint32
	MemID    uint32
}

func (n *notification) encode(dst []byte) []byte {
	w := writer{b: dst[:0]}
	w.u16(notifyMagic)
	w.u8(protoVersion)
	w.u8(uint8(n.Op))
	w.u64(n.UID)
	w.u64(n.Instance)
	w.u32(n.Parts)
	w.u32(n.MemID)
	return w.b
}

var errNotifyMagic = errors.New("bad magic")

func decodeNotification(b []byte) (notification, error) {
	r := reader{what: "rdma notification", b: b}
	var n notification
	if m := r.u16("magic"); r.err == nil && m != notifyMagic {
		return n, fmt.Errorf("rdma notification: %w: %w", core.ErrMalformed, errNotifyMagic)
	}
	if v := r.u8("version"); r.err == nil && v != protoVersion {
		r.fail("version %d", v)
	}
	n.Op = core.Op(r.u8("op"))
	n.UID = r.u64("uid")
	n.Instance = r.u64("instance")
	n.Parts = r.u32("parts")
	n.MemID = r.u32("memory id")
	if r.err == nil && (n.Op != core.OpRead && n.Op != core.OpWrite) {
		r.fail("op %d", n.Op)
	}
	if r.err == nil && (n.Parts == 0 || n.Parts > MaxQPsPerPeer) {
		r.fail("%d parts, want 1..%d", n.Parts, MaxQPsPerPeer)
	}
	if err := r.end(); err != nil {
		return n, err
	}
	return n, nil
}
