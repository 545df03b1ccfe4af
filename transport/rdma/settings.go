package rdma

import (
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/mori-go/mori-go/core"
	"github.com/mori-go/mori-go/verbs"
)

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
	defaultRecvDepth      = 1024
	defaultMaxWRSize      = 1 << 20
	autoPostBatch         = 64
	maxPostBatch          = 1024
	notifySlot            = 32
	recvSlot              = 64
	maxInline             = 64
	recvRepostBatch       = 64 // receives reposted by one ibv_post_recv
)

func newSettings(cfg Config, o Options) (*settings, error) {
	s := &settings{Options: withDefaults(o), notify: cfg.EnableNotification, gidIndex: -1}
	if err := s.applyConfig(cfg); err != nil {
		return nil, err
	}
	if err := s.readEnv(cfg); err != nil {
		return nil, err
	}
	if err := s.validate(); err != nil {
		return nil, err
	}
	return s, nil
}

// withDefaults fills the options left zero.
func withDefaults(o Options) Options {
	if o.Getenv == nil {
		o.Getenv = os.Getenv
	}
	if o.NewTimer == nil {
		o.NewTimer = time.NewTimer
	}
	if o.Topology.Root == "" {
		o.Topology = SystemTopology()
	}
	if o.Netdev == nil {
		o.Netdev = rdmamapNetdev
	}
	def := func(v *int, d int) {
		if *v <= 0 {
			*v = d
		}
	}
	def(&o.SendQueueDepth, defaultSendQueueDepth)
	def(&o.RecvDepth, defaultRecvDepth)
	def(&o.MaxTargetQPs, 4096)
	if o.MaxWRSize == 0 {
		o.MaxWRSize = defaultMaxWRSize
	}
	def8 := func(v *uint8, d uint8) {
		if *v == 0 {
			*v = d
		}
	}
	def8(&o.Timeout, 14)
	def8(&o.RetryCnt, 7)
	def8(&o.RNRRetry, 7)
	def8(&o.MinRNRTimer, 12)
	if o.ReconnectBackoff <= 0 {
		o.ReconnectBackoff = 50 * time.Millisecond
	}
	return o
}

// applyConfig takes MORI-IO's RdmaBackendConfig fields.
func (s *settings) applyConfig(cfg Config) error {
	switch {
	case cfg.QPPerTransfer <= 0:
		s.qpPerTransfer = 1
	case cfg.QPPerTransfer > MaxQPsPerPeer:
		return core.Errorf(core.ErrInvalidArgs, "qp_per_transfer %d: at most %d", cfg.QPPerTransfer, MaxQPsPerPeer)
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
		return core.Errorf(core.ErrInvalidArgs, "poll_cq_mode %d: want 0 (polling) or 1 (event)", cfg.PollCQMode)
	}
	return nil
}

// readEnv reads MORI's environment variables (once, in the factory) for
// the settings that the configuration and the options leave empty.
func (s *settings) readEnv(cfg Config) error {
	devices := cfg.Devices
	if devices == "" {
		devices = s.Getenv("MORI_RDMA_DEVICES")
	}
	f, err := ParseDeviceFilter(devices)
	if err != nil {
		return core.Errorf(core.ErrInvalidArgs, "%w", err)
	}
	s.filter = f
	if s.GIDIndex != nil {
		s.gidIndex = *s.GIDIndex
	} else if v := strings.TrimSpace(s.Getenv("MORI_IB_GID_INDEX")); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 0 || n > 255 {
			return core.Errorf(core.ErrInvalidArgs, "MORI_IB_GID_INDEX=%q: want 0..255", v)
		}
		s.gidIndex = n
	}
	if err := s.readQoS(cfg); err != nil {
		return err
	}
	if s.PathMTU == 0 {
		if v := strings.TrimSpace(s.Getenv("MORI_IB_PATH_MTU")); v != "" {
			n, err := strconv.Atoi(v)
			if _, ok := verbs.MTUFromBytes(n); err != nil || !ok {
				return core.Errorf(core.ErrInvalidArgs, "MORI_IB_PATH_MTU=%q: want 256, 512, 1024, 2048 or 4096", v)
			}
			s.PathMTU = n
		}
	}
	return nil
}

// readQoS sets the traffic class and service level: the config's, else the
// options', else MORI-IO's variables, else MORI's.
func (s *settings) readQoS(cfg Config) error {
	tc, err := s.pick("traffic class", cfg.TrafficClass, s.TrafficClass, 255, "MORI_IO_TC", "MORI_RDMA_TC")
	if err != nil {
		return err
	}
	sl, err := s.pick("service level", cfg.ServiceLevel, s.ServiceLevel, 15, "MORI_IO_SL", "MORI_RDMA_SL")
	if err != nil {
		return err
	}
	s.TrafficClass, s.ServiceLevel = tc, sl
	return nil
}

// pick returns the first of the config's value, the option's and the
// environment variables' that is set (non-zero), checked against 0..most.
func (s *settings) pick(what string, fromConfig int, fromOptions uint8, most int, vars ...string) (uint8, error) {
	if fromConfig != 0 {
		if fromConfig < 0 || fromConfig > most {
			return 0, core.Errorf(core.ErrInvalidArgs, "%s %d: want 0..%d", what, fromConfig, most)
		}
		return uint8(fromConfig), nil
	}
	if fromOptions != 0 {
		if int(fromOptions) > most {
			return 0, core.Errorf(core.ErrInvalidArgs, "%s %d: want 0..%d", what, fromOptions, most)
		}
		return fromOptions, nil
	}
	for _, name := range vars {
		v := strings.TrimSpace(s.Getenv(name))
		if v == "" {
			continue
		}
		n, err := strconv.Atoi(v)
		if err != nil || n < 0 || n > most {
			return 0, core.Errorf(core.ErrInvalidArgs, "%s=%q: want a %s 0..%d", name, v, what, most)
		}
		return uint8(n), nil
	}
	return 0, nil
}

// validate checks the settings' ranges.
func (s *settings) validate() error {
	if s.PathMTU != 0 {
		if _, ok := verbs.MTUFromBytes(s.PathMTU); !ok {
			return core.Errorf(core.ErrInvalidArgs, "path MTU %d: want 256, 512, 1024, 2048 or 4096", s.PathMTU)
		}
	}
	if s.RetryCnt > 7 || s.RNRRetry > 7 || s.Timeout > 31 || s.MinRNRTimer > 31 {
		return core.Errorf(core.ErrInvalidArgs, "transport settings out of range: timeout %d retry %d rnr retry %d min rnr timer %d", s.Timeout, s.RetryCnt, s.RNRRetry, s.MinRNRTimer)
	}
	return nil
}

func (s *settings) String() string {
	mode := "polling"
	if s.eventMode {
		mode = "event"
	}
	return fmt.Sprintf("qp_per_transfer=%d post_batch=%d poll=%s notification=%t devices=%q tc=%d sl=%d", s.qpPerTransfer, s.postBatch, mode, s.notify, s.filter.String(), s.TrafficClass, s.ServiceLevel)
}
