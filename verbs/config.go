package verbs

import (
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/mori-go/mori-go/core"
)

// RDMAConfig is MORI-IO's RdmaBackendConfig, given at CreateBackend.
type RDMAConfig struct {
	QPPerTransfer      int    `json:"qp_per_transfer"`
	PostBatchSize      int    `json:"post_batch_size"`
	NumWorkerThreads   int    `json:"num_worker_threads"`
	PollCQMode         int    `json:"poll_cq_mode"`
	EnableNotification bool   `json:"enable_notification"`
	Devices            string `json:"devices"` // MORI_RDMA_DEVICES syntax
}

// Options tunes the RDMA backend beyond MORI-IO's RdmaBackendConfig
// (RDMAConfig). Zero fields take the defaults.
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
	// (default 256).
	RecvDepth int
	// MaxWRSize is the largest work request in bytes (default 1 MiB, capped
	// by the port's max_msg_sz): larger ranges are split, so that one range
	// spreads over several QPs.
	MaxWRSize uint64
	// Timeout, RetryCnt, RNRRetry and MinRNRTimer are the RC transport
	// settings (defaults 14, 7, 7, 12 as MORI-IO). RetryCnt 7 with
	// Timeout 14 gives about 0.5 s before a lost peer fails a transfer.
	Timeout, RetryCnt, RNRRetry, MinRNRTimer uint8
	// ServiceLevel and TrafficClass set the QPs' SL and (RoCE) traffic class.
	ServiceLevel, TrafficClass uint8
	// MaxTargetQPs bounds the QPs peers may open on this engine (default
	// 4096).
	MaxTargetQPs int
	// ReconnectBackoff is the first wait between attempts to rebuild a
	// broken QP (default 50 ms, doubling up to 5 s).
	ReconnectBackoff time.Duration
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

// settings are the options and the engine config after defaults and
// validation.
type settings struct {
	Options
	qpPerTransfer int
	postBatch     int
	eventMode     bool
	notify        bool
	filter        DeviceFilter
	gidIndex      int
}

const (
	defaultSendQueueDepth = 1024
	defaultRecvDepth      = 256
	defaultMaxWRSize      = 1 << 20
	autoPostBatch         = 64
	maxPostBatch          = 1024
	notifySlot            = 32
	recvSlot              = 64
	maxInline             = 64
)

func newSettings(cfg RDMAConfig, o Options) (*settings, error) {
	if o.Getenv == nil {
		o.Getenv = os.Getenv
	}
	if o.Topology.Root == "" {
		o.Topology = SystemTopology()
	}
	if o.Netdev == nil {
		o.Netdev = rdmamapNetdev
	}
	s := &settings{Options: o, notify: cfg.EnableNotification, gidIndex: -1}
	def := func(v *int, d int) {
		if *v <= 0 {
			*v = d
		}
	}
	def(&s.SendQueueDepth, defaultSendQueueDepth)
	def(&s.RecvDepth, defaultRecvDepth)
	def(&s.MaxTargetQPs, 4096)
	if s.MaxWRSize == 0 {
		s.MaxWRSize = defaultMaxWRSize
	}
	if s.Timeout == 0 {
		s.Timeout = 14
	}
	if s.RetryCnt == 0 {
		s.RetryCnt = 7
	}
	if s.RNRRetry == 0 {
		s.RNRRetry = 7
	}
	if s.MinRNRTimer == 0 {
		s.MinRNRTimer = 12
	}
	if s.ReconnectBackoff <= 0 {
		s.ReconnectBackoff = 50 * time.Millisecond
	}
	switch {
	case cfg.QPPerTransfer <= 0:
		s.qpPerTransfer = 1
	case cfg.QPPerTransfer > MaxQPsPerPeer:
		return nil, core.Errorf(core.ErrInvalidArgs, "qp_per_transfer %d: at most %d", cfg.QPPerTransfer, MaxQPsPerPeer)
	default:
		s.qpPerTransfer = cfg.QPPerTransfer
	}
	switch {
	case cfg.PostBatchSize <= 0:
		s.postBatch = autoPostBatch
	default:
		s.postBatch = min(cfg.PostBatchSize, maxPostBatch)
	}
	switch cfg.PollCQMode {
	case 0:
	case 1:
		s.eventMode = true
	default:
		return nil, core.Errorf(core.ErrInvalidArgs, "poll_cq_mode %d: want 0 (polling) or 1 (event)", cfg.PollCQMode)
	}
	devices := cfg.Devices
	if devices == "" {
		devices = s.Getenv("MORI_RDMA_DEVICES")
	}
	f, err := ParseDeviceFilter(devices)
	if err != nil {
		return nil, core.Errorf(core.ErrInvalidArgs, "%w", err)
	}
	s.filter = f
	if o.GIDIndex != nil {
		s.gidIndex = *o.GIDIndex
	} else if v := strings.TrimSpace(s.Getenv("MORI_IB_GID_INDEX")); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 0 || n > 255 {
			return nil, core.Errorf(core.ErrInvalidArgs, "MORI_IB_GID_INDEX=%q: want 0..255", v)
		}
		s.gidIndex = n
	}
	if s.PathMTU == 0 {
		if v := strings.TrimSpace(s.Getenv("MORI_IB_PATH_MTU")); v != "" {
			n, err := strconv.Atoi(v)
			if _, ok := MTUFromBytes(n); err != nil || !ok {
				return nil, core.Errorf(core.ErrInvalidArgs, "MORI_IB_PATH_MTU=%q: want 256, 512, 1024, 2048 or 4096", v)
			}
			s.PathMTU = n
		}
	}
	if s.PathMTU != 0 {
		if _, ok := MTUFromBytes(s.PathMTU); !ok {
			return nil, core.Errorf(core.ErrInvalidArgs, "path MTU %d: want 256, 512, 1024, 2048 or 4096", s.PathMTU)
		}
	}
	if s.RetryCnt > 7 || s.RNRRetry > 7 || s.Timeout > 31 || s.MinRNRTimer > 31 {
		return nil, core.Errorf(core.ErrInvalidArgs, "transport settings out of range: timeout %d retry %d rnr retry %d min rnr timer %d", s.Timeout, s.RetryCnt, s.RNRRetry, s.MinRNRTimer)
	}
	return s, nil
}

func (s *settings) String() string {
	mode := "polling"
	if s.eventMode {
		mode = "event"
	}
	return fmt.Sprintf("qp_per_transfer=%d post_batch=%d poll=%s notification=%t devices=%q", s.qpPerTransfer, s.postBatch, mode, s.notify, s.filter.String())
}
