package rdma

import (
	"time"
)

// Config is MORI-IO's RdmaBackendConfig, given at CreateBackend.
type Config struct {
	QPPerTransfer      int    `json:"qp_per_transfer"`
	PostBatchSize      int    `json:"post_batch_size"`
	NumWorkerThreads   int    `json:"num_worker_threads"`
	PollCQMode         int    `json:"poll_cq_mode"`
	EnableNotification bool   `json:"enable_notification"`
	Devices            string `json:"devices"` // MORI_RDMA_DEVICES syntax
	// TrafficClass (0..255, RoCE) and ServiceLevel (0..15) of the QPs; 0
	// leaves them to Options, then to MORI_IO_TC / MORI_RDMA_TC and
	// MORI_IO_SL / MORI_RDMA_SL. RoCE fabrics with PFC put RDMA in a
	// lossless class (AMD's runners use TC 96 or 104).
	TrafficClass int `json:"traffic_class"`
	ServiceLevel int `json:"service_level"`
}

// Options tunes the RDMA backend beyond MORI-IO's RdmaBackendConfig
// (Config). Zero fields take the defaults.
type Options struct {
	// GPUBusID is the PCI address of this engine's GPU; with several NICs
	// and no device filter, the NIC nearest to it is used. When empty, the
	// GPU of a GPU region already registered is asked (if the GPU driver
	// implements BusIDer); without either the first active NIC by name is
	// used.
	GPUBusID string
	// Topology is the sysfs tree read for PCI topology (default /sys).
	Topology Topology
	// Netdev maps a network interface named in the device filter to its
	// RDMA device (default: rdmamap).
	Netdev NetdevMapper
	// GIDIndex forces a GID table index; nil selects automatically
	// (MORI_IB_GID_INDEX).
	GIDIndex *int
	// PathMTU caps the path MTU in bytes (256..4096); 0 uses the ports'
	// active MTU (MORI_IB_PATH_MTU).
	PathMTU int
	// SendQueueDepth is max_send_wr per QP (default 1024, capped by the
	// device).
	SendQueueDepth int
	// RecvDepth is the receive buffers per target QP for notifications
	// (default 1024, as MORI-IO: more than the 512 notifications one
	// sender's QP can have in flight, so that none waits for a receive).
	RecvDepth int
	// MaxWRSize is the largest work request in bytes (default 1 MiB, capped
	// by the port's max_msg_sz): larger ranges are split, so that one range
	// spreads over several QPs.
	MaxWRSize uint64
	// Timeout, RetryCnt, RNRRetry and MinRNRTimer are the RC transport
	// settings (defaults 14, 7, 7, 12 as MORI-IO). RetryCnt 7 with
	// Timeout 14 gives about 0.5 s before a lost peer fails a transfer.
	Timeout, RetryCnt, RNRRetry, MinRNRTimer uint8
	// ServiceLevel and TrafficClass set the QPs' SL and (RoCE) traffic
	// class when the Config leaves them 0; 0 here reads MORI_IO_SL /
	// MORI_RDMA_SL and MORI_IO_TC / MORI_RDMA_TC.
	ServiceLevel, TrafficClass uint8
	// PKeyIndex is the partition key table index of the QPs (default 0).
	PKeyIndex uint16
	// MaxTargetQPs bounds the QPs peers may open on this engine (default
	// 4096).
	MaxTargetQPs int
	// ReconnectBackoff is the first wait between attempts to rebuild a
	// broken QP (default 50 ms, doubling up to 5 s).
	ReconnectBackoff time.Duration
	// NewTimer makes the timers of the polling loop's parks (default
	// time.NewTimer). The simulator's Fabric.NewTimer rounds them up as
	// Go's runtime does in an idle process.
	NewTimer func(time.Duration) *time.Timer
	// Getenv reads MORI's environment variables once, in the factory, for
	// settings left empty (default os.Getenv). Tests pass a stub.
	Getenv func(string) string
}

// BusIDer is implemented by GPU drivers that can name a device's PCI
// address; the backend uses it to find the NIC nearest the GPU.
type BusIDer interface {
	PCIBusID(device int) (string, error)
}

// DmabufExporter is implemented by GPU drivers that can export device
// memory as a dma-buf. The backend then registers GPU memory with
// ibv_reg_dmabuf_mr (no peer-memory kernel module needed); it closes fd
// after registration.
type DmabufExporter interface {
	ExportDmabuf(addr uintptr, size uint64, device int) (fd int, offset uint64, err error)
}
