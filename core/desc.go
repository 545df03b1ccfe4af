package core

import (
	"fmt"
	"slices"
)

// Limits on descriptor fields. Encoders refuse values past them, so that
// whatever one engine encodes another decodes.
const (
	MaxKeyLen       = 512
	MaxHostLen      = 255
	MaxBlobLen      = 4096
	MaxBackendBlobs = 8
	IPCHandleSize   = 64
)

// Descriptor versions. A decoder refuses versions it does not know.
const (
	engineDescMagic = "MGE"
	memoryDescMagic = "MGM"
	descVersion     = 1
	// memoryDescVersion 2 added the access token (Token) after the id.
	// Version 1 descriptors carry none: every access with one is refused,
	// so the decoder refuses them outright and says why.
	memoryDescVersion = 2
	maxEngineDescLen  = 4 + 2*MaxKeyLen + 3*(2+MaxHostLen) + 8 + 1 + MaxBackendBlobs*(3+MaxBlobLen)
)

// BackendBlob is backend-specific data carried in a descriptor: the TCP
// data port in an EngineDesc, an RDMA rkey or a GPU IPC handle in a
// MemoryDesc.
type BackendBlob struct {
	Type BackendType
	Data []byte
}

// EngineDesc identifies an engine and says how to reach it. It is what
// get_engine_desc returns and register_remote_engine takes.
type EngineDesc struct {
	Key      string
	NodeID   string
	Hostname string
	Host     string
	Port     uint16 // control plane (ZeroMQ) port
	PID      uint32
	Backends []BackendBlob
}

// Blob returns the data that backend t published, or nil.
func (d *EngineDesc) Blob(t BackendType) []byte {
	for _, b := range d.Backends {
		if b.Type == t {
			return b.Data
		}
	}
	return nil
}

func checkBlobs(what string, bs []BackendBlob) error {
	if len(bs) > MaxBackendBlobs {
		return Errorf(ErrInvalidArgs, "%s: %d backend blobs, at most %d", what, len(bs), MaxBackendBlobs)
	}
	for _, b := range bs {
		if len(b.Data) > MaxBlobLen {
			return Errorf(ErrInvalidArgs, "%s: %s blob of %d bytes, at most %d", what, b.Type, len(b.Data), MaxBlobLen)
		}
	}
	return nil
}

// Validate checks the limits that Marshal enforces.
func (d *EngineDesc) Validate() error {
	if d.Key == "" {
		return Errorf(ErrInvalidArgs, "engine desc: empty key")
	}
	if len(d.Key) > MaxKeyLen {
		return Errorf(ErrInvalidArgs, "engine desc: key of %d bytes, at most %d", len(d.Key), MaxKeyLen)
	}
	for name, v := range map[string]string{"node id": d.NodeID, "hostname": d.Hostname, "host": d.Host} {
		if len(v) > MaxHostLen {
			return Errorf(ErrInvalidArgs, "engine desc %q: %s of %d bytes, at most %d", d.Key, name, len(v), MaxHostLen)
		}
	}
	return checkBlobs("engine desc "+d.Key, d.Backends)
}

// MarshalBinary encodes d in the versioned descriptor format.
func (d *EngineDesc) MarshalBinary() ([]byte, error) {
	if err := d.Validate(); err != nil {
		return nil, err
	}
	w := wireWriter{b: make([]byte, 0, 64+len(d.Key))}
	w.b = append(w.b, engineDescMagic...)
	w.u8(descVersion)
	w.str(d.Key)
	w.str(d.NodeID)
	w.str(d.Hostname)
	w.str(d.Host)
	w.u16(d.Port)
	w.u32(d.PID)
	writeBlobs(&w, d.Backends)
	return w.b, nil
}

// UnmarshalBinary decodes an EngineDesc, refusing anything malformed,
// oversized or of an unknown version.
func (d *EngineDesc) UnmarshalBinary(b []byte) error {
	if len(b) > maxEngineDescLen {
		return fmt.Errorf("engine desc: %w: %d bytes, at most %d", ErrMalformed, len(b), maxEngineDescLen)
	}
	r := wireReader{b: b}
	if string(r.take(3, "magic")) != engineDescMagic && r.err == nil {
		return fmt.Errorf("engine desc: %w: bad magic (not an engine descriptor)", ErrMalformed)
	}
	if v := r.u8("version"); r.err == nil && v != descVersion {
		return fmt.Errorf("engine desc: %w: version %d, this build reads version %d", ErrMalformed, v, descVersion)
	}
	var n EngineDesc
	n.Key = r.str("key", MaxKeyLen)
	n.NodeID = r.str("node id", MaxHostLen)
	n.Hostname = r.str("hostname", MaxHostLen)
	n.Host = r.str("host", MaxHostLen)
	n.Port = r.u16("port")
	n.PID = r.u32("pid")
	n.Backends = readBlobs(&r)
	if err := r.end(); err != nil {
		return fmt.Errorf("engine desc: %w", err)
	}
	if n.Key == "" {
		return fmt.Errorf("engine desc: %w: empty key", ErrMalformed)
	}
	*d = n
	return nil
}

func writeBlobs(w *wireWriter, bs []BackendBlob) {
	w.u8(uint8(len(bs)))
	for _, b := range bs {
		w.u8(uint8(b.Type))
		w.blob(b.Data)
	}
}

func readBlobs(r *wireReader) []BackendBlob {
	n := int(r.u8("backend count"))
	if r.err == nil && n > MaxBackendBlobs {
		r.fail("backend count", "%d blobs, at most %d", n, MaxBackendBlobs)
		return nil
	}
	var bs []BackendBlob
	for i := 0; i < n && r.err == nil; i++ {
		t := BackendType(r.u8("backend type"))
		data := r.blob("backend blob", MaxBlobLen)
		bs = append(bs, BackendBlob{Type: t, Data: data})
	}
	return bs
}

// MemoryDesc describes a registered memory region of one engine. It is
// what register_memory returns; the peer that receives it names the region
// in transfers by (EngineKey, ID) and presents Token with every access.
// Addr is informative: the owning engine never trusts it and resolves ID
// and Token through its own registry (Registry.Resolve).
type MemoryDesc struct {
	EngineKey string
	ID        uint32
	// Token is the registration's capability: whoever holds the
	// descriptor may access the memory, nobody else. It is never printed
	// nor part of any JSON view.
	Token       Token `json:"-"`
	Device      int32
	Location    MemoryLocation
	Addr        uint64
	Size        uint64
	DeviceBusID string
	NUMANode    int32
	Backends    []BackendBlob
}

// Blob returns the data that backend t attached, or nil.
func (m *MemoryDesc) Blob(t BackendType) []byte {
	for _, b := range m.Backends {
		if b.Type == t {
			return b.Data
		}
	}
	return nil
}

func (m *MemoryDesc) String() string {
	return fmt.Sprintf("memory %d of %q (%s, %d bytes)", m.ID, m.EngineKey, m.Location, m.Size)
}

// Equal compares two descriptors field by field.
func (m *MemoryDesc) Equal(o *MemoryDesc) bool {
	return m.EngineKey == o.EngineKey && m.ID == o.ID && m.Token.Equal(o.Token) && m.Device == o.Device &&
		m.Location == o.Location && m.Addr == o.Addr && m.Size == o.Size &&
		m.DeviceBusID == o.DeviceBusID && m.NUMANode == o.NUMANode &&
		slices.EqualFunc(m.Backends, o.Backends, func(a, b BackendBlob) bool {
			return a.Type == b.Type && string(a.Data) == string(b.Data)
		})
}

// MarshalBinary encodes m in the versioned descriptor format.
func (m *MemoryDesc) MarshalBinary() ([]byte, error) {
	if m.EngineKey == "" || len(m.EngineKey) > MaxKeyLen {
		return nil, Errorf(ErrInvalidArgs, "memory desc: engine key of %d bytes, want 1..%d", len(m.EngineKey), MaxKeyLen)
	}
	if len(m.DeviceBusID) > MaxHostLen {
		return nil, Errorf(ErrInvalidArgs, "memory desc: bus id of %d bytes, at most %d", len(m.DeviceBusID), MaxHostLen)
	}
	if m.Location != LocationCPU && m.Location != LocationGPU {
		// UnmarshalBinary refuses it: do not hand out what no peer reads.
		return nil, Errorf(ErrInvalidArgs, "memory desc: unknown location %d", m.Location)
	}
	if err := checkBlobs("memory desc", m.Backends); err != nil {
		return nil, err
	}
	w := wireWriter{b: make([]byte, 0, 64+len(m.EngineKey))}
	w.b = append(w.b, memoryDescMagic...)
	w.u8(memoryDescVersion)
	w.str(m.EngineKey)
	w.u32(m.ID)
	w.b = append(w.b, m.Token[:]...)
	w.u32(uint32(m.Device))
	w.u8(uint8(m.Location))
	w.u64(m.Addr)
	w.u64(m.Size)
	w.str(m.DeviceBusID)
	w.u32(uint32(m.NUMANode))
	writeBlobs(&w, m.Backends)
	return w.b, nil
}

// UnmarshalBinary decodes a MemoryDesc, refusing anything malformed,
// oversized or of an unknown version.
func (m *MemoryDesc) UnmarshalBinary(b []byte) error {
	if len(b) > maxEngineDescLen {
		return fmt.Errorf("memory desc: %w: %d bytes, at most %d", ErrMalformed, len(b), maxEngineDescLen)
	}
	r := wireReader{b: b}
	if string(r.take(3, "magic")) != memoryDescMagic && r.err == nil {
		return fmt.Errorf("memory desc: %w: bad magic (not a memory descriptor)", ErrMalformed)
	}
	if v := r.u8("version"); r.err == nil && v != memoryDescVersion {
		return fmt.Errorf("memory desc: %w: version %d, this build reads version %d (descriptors with an access token: register the memory again with this build)", ErrMalformed, v, memoryDescVersion)
	}
	var n MemoryDesc
	n.EngineKey = r.str("engine key", MaxKeyLen)
	n.ID = r.u32("id")
	copy(n.Token[:], r.take(TokenLen, "token"))
	n.Device = int32(r.u32("device"))
	n.Location = MemoryLocation(r.u8("location"))
	n.Addr = r.u64("addr")
	n.Size = r.u64("size")
	n.DeviceBusID = r.str("bus id", MaxHostLen)
	n.NUMANode = int32(r.u32("numa node"))
	n.Backends = readBlobs(&r)
	if err := r.end(); err != nil {
		return fmt.Errorf("memory desc: %w", err)
	}
	if n.EngineKey == "" {
		return fmt.Errorf("memory desc: %w: empty engine key", ErrMalformed)
	}
	if n.Location != LocationCPU && n.Location != LocationGPU {
		return fmt.Errorf("memory desc: %w: location %d", ErrMalformed, n.Location)
	}
	*m = n
	return nil
}
