package core

//go:generate go tool stringer -type=BackendType,MemoryLocation,Op -linecomment -output=types_string.go

// BackendType names a data plane. The values match MORI-IO's BackendType.
type BackendType uint8

const (
	BackendUnknown BackendType = 0 // unknown
	BackendXGMI    BackendType = 1 // xgmi
	BackendRDMA    BackendType = 2 // rdma
	BackendTCP     BackendType = 3 // tcp
	BackendFabric  BackendType = 4 // fabric
)

// MemoryLocation says where registered memory lives. Values match MORI-IO.
type MemoryLocation uint8

const (
	LocationUnknown MemoryLocation = 0 // unknown
	LocationCPU     MemoryLocation = 1 // cpu
	LocationGPU     MemoryLocation = 2 // gpu
)

// Op is the direction of a one-sided transfer, seen from the initiator.
type Op uint8

const (
	// OpWrite copies local memory into the remote engine's memory.
	OpWrite Op = 1 // write
	// OpRead copies the remote engine's memory into local memory.
	OpRead Op = 2 // read
)

// Range is one contiguous piece of a transfer: Size bytes at LocalOffset in
// the local memory and at RemoteOffset in the remote memory.
type Range struct {
	LocalOffset  uint64
	RemoteOffset uint64
	Size         uint64
}

// CoalesceRanges merges neighbours that are contiguous on both sides, in
// place, keeping the order given, and returns the shortened slice. A merged
// range never grows past maxSize bytes (0 means no limit). Zero-length
// ranges are never merged (so that they are still refused where checked),
// nor ranges whose merge would wrap around 2^64.
func CoalesceRanges(rs []Range, maxSize uint64) []Range {
	if len(rs) < 2 {
		return rs
	}
	out := rs[:1]
	for _, r := range rs[1:] {
		last := &out[len(out)-1]
		if r.Size != 0 && last.Size != 0 &&
			last.LocalOffset+last.Size == r.LocalOffset && r.LocalOffset > last.LocalOffset &&
			last.RemoteOffset+last.Size == r.RemoteOffset && r.RemoteOffset > last.RemoteOffset &&
			last.Size+r.Size > last.Size &&
			(maxSize == 0 || last.Size+r.Size <= maxSize) {
			last.Size += r.Size
			continue
		}
		out = append(out, r)
	}
	return out
}
