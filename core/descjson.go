package core

import (
	"encoding/json"
)

// backendNames lists the types of the blobs, as their names.
func backendNames(bs []BackendBlob) []string {
	out := make([]string, 0, len(bs))
	for _, b := range bs {
		out = append(out, b.Type.String())
	}
	return out
}

// MarshalJSON is the readable view of an engine descriptor (what
// mg_desc_to_json returns): its fields and the names of the backends it
// carries blobs for.
func (d *EngineDesc) MarshalJSON() ([]byte, error) {
	return json.Marshal(struct {
		Kind     string   `json:"kind"`
		Key      string   `json:"key"`
		NodeID   string   `json:"node_id"`
		Hostname string   `json:"hostname"`
		Host     string   `json:"host"`
		Port     uint16   `json:"port"`
		PID      uint32   `json:"pid"`
		Backends []string `json:"backends"`
	}{"engine", d.Key, d.NodeID, d.Hostname, d.Host, d.Port, d.PID, backendNames(d.Backends)})
}

// MarshalJSON is the readable view of a memory descriptor: its fields
// (location as MORI-IO's number) and the names of the backends it carries
// blobs for.
func (m *MemoryDesc) MarshalJSON() ([]byte, error) {
	return json.Marshal(struct {
		Kind        string   `json:"kind"`
		EngineKey   string   `json:"engine_key"`
		ID          uint32   `json:"id"`
		Device      int32    `json:"device_id"`
		Location    uint8    `json:"location"`
		Addr        uint64   `json:"data"`
		Size        uint64   `json:"size"`
		DeviceBusID string   `json:"device_bus_id"`
		NUMANode    int32    `json:"numa_node"`
		Backends    []string `json:"backends"`
	}{"memory", m.EngineKey, m.ID, m.Device, uint8(m.Location), m.Addr, m.Size, m.DeviceBusID, m.NUMANode, backendNames(m.Backends)})
}

// DecodeDesc decodes an engine or a memory descriptor, whichever b is,
// into an *EngineDesc or a *MemoryDesc.
func DecodeDesc(b []byte) (json.Marshaler, error) {
	var ed EngineDesc
	errEngine := ed.UnmarshalBinary(b)
	if errEngine == nil {
		return &ed, nil
	}
	var md MemoryDesc
	errMemory := md.UnmarshalBinary(b)
	if errMemory == nil {
		return &md, nil
	}
	return nil, Errorf(ErrInvalidArgs, "not a descriptor: %v; %v", errEngine, errMemory)
}
