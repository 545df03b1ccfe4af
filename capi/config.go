package main

import (
	"encoding/json"
	"log/slog"
	"os"
	"strings"
	"time"

	"github.com/mori-go/mori-go/core"
	"github.com/mori-go/mori-go/core/engine"
	"github.com/mori-go/mori-go/core/tlsconf"
	"github.com/mori-go/mori-go/stack"
	"github.com/mori-go/mori-go/transport/compress"
	"github.com/mori-go/mori-go/transport/tcp"
)

// engineConfig is the JSON configuration of mg_engine_create. Configuration
// crosses the ABI explicitly: the library reads no environment variable an
// embedding Python may change after start (the RDMA backend reads MORI's
// tuning variables once, when it is created; see README).
type engineConfig struct {
	Key               string    `json:"key"`
	Host              string    `json:"host"`
	Port              int       `json:"port"`
	Secret            string    `json:"secret"`
	Backend           string    `json:"backend"`
	TransferTimeoutMS int64     `json:"transfer_timeout_ms"`
	HandshakeTimeout  int64     `json:"handshake_timeout_ms"`
	LogLevel          string    `json:"log_level"`
	NodeID            string    `json:"node_id"`
	InboundCapacity   int       `json:"inbound_capacity"`
	RDMADevices       string    `json:"rdma_devices"`
	GPU               string    `json:"gpu"`           // "auto" (default), "off", or a driver library path
	TotalsLogMS       int64     `json:"totals_log_ms"` // log transfer totals at info level this often (0: never)
	TCP               tcpConfig `json:"tcp"`
	TLS               tlsConfig `json:"tls"`
}

// tlsConfig names the PEM files of the TLS mode (all three, or none).
type tlsConfig struct {
	Cert string `json:"cert"`
	Key  string `json:"key"`
	CA   string `json:"ca"`
}

type tcpConfig struct {
	Port           int   `json:"port"`
	Streams        int   `json:"streams"`
	ChunkSize      int   `json:"chunk_size"`
	MaxEntries     int   `json:"max_entries"`
	Window         int   `json:"window"`
	StallTimeoutMS int64 `json:"stall_timeout_ms"`
	DialTimeoutMS  int64 `json:"dial_timeout_ms"`
	// BusyPollUS: microseconds a waiting thread polls for its
	// acknowledgement before sleeping (0: the default, 50; negative: never).
	BusyPollUS int64 `json:"busy_poll_us"`
	// Congestion: the streams' TCP congestion control ("cubic", "reno",
	// ...); empty: the system's.
	Congestion string `json:"congestion"`
	// Compression: off | s2 | zstd | auto; CompressElemSize: byte-plane
	// shuffle element (2 for bf16/fp16, 0 none).
	Compression      string `json:"compression"`
	CompressElemSize int    `json:"compress_elem_size"`
}

func parseLevel(s string) (slog.Level, error) {
	switch strings.ToLower(s) {
	case "", "warn", "warning":
		return slog.LevelWarn, nil
	case "debug":
		return slog.LevelDebug, nil
	case "info":
		return slog.LevelInfo, nil
	case "error":
		return slog.LevelError, nil
	}
	return 0, core.Errorf(core.ErrInvalidArgs, "log level %q: want debug, info, warn or error", s)
}

// stackConfig maps the JSON configuration onto the engine's and its data
// planes'.
func (c *engineConfig) stackConfig() (stack.Config, error) {
	lvl, err := parseLevel(c.LogLevel)
	if err != nil {
		return stack.Config{}, err
	}
	logger := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: lvl})).With("lib", "mori-go")
	ec := stack.Config{Config: engine.Config{
		Key:               c.Key,
		Host:              c.Host,
		Port:              c.Port,
		TransferTimeout:   time.Duration(c.TransferTimeoutMS) * time.Millisecond,
		HandshakeTimeout:  time.Duration(c.HandshakeTimeout) * time.Millisecond,
		InboundCapacity:   c.InboundCapacity,
		Mode:              engine.BackendMode(strings.ToLower(c.Backend)),
		NodeID:            c.NodeID,
		TLS:               tlsconf.Files{Cert: c.TLS.Cert, Key: c.TLS.Key, CA: c.TLS.CA},
		Logger:            logger,
		TotalsLogInterval: time.Duration(c.TotalsLogMS) * time.Millisecond,
	}, TCP: tcp.Config{
		Port:         c.TCP.Port,
		Streams:      c.TCP.Streams,
		ChunkSize:    c.TCP.ChunkSize,
		MaxEntries:   c.TCP.MaxEntries,
		Window:       c.TCP.Window,
		StallTimeout: time.Duration(c.TCP.StallTimeoutMS) * time.Millisecond,
		DialTimeout:  time.Duration(c.TCP.DialTimeoutMS) * time.Millisecond,
		BusyPoll:     time.Duration(c.TCP.BusyPollUS) * time.Microsecond,
		Congestion:   c.TCP.Congestion,

		Compression:      c.TCP.Compression,
		CompressElemSize: c.TCP.CompressElemSize,
	}, RDMADevices: c.RDMADevices}
	if _, err := compress.ParseMode(c.TCP.Compression); err != nil {
		return stack.Config{}, core.Errorf(core.ErrInvalidArgs, "engine config: tcp: %v", err)
	}
	if c.Secret != "" {
		ec.Secret = []byte(c.Secret)
	}
	return ec, nil
}

func decodeEngineConfig(s string) (engineConfig, error) {
	var c engineConfig
	dec := json.NewDecoder(strings.NewReader(s))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&c); err != nil {
		return c, core.Errorf(core.ErrInvalidArgs, "engine config: %v", err)
	}
	if c.Key == "" {
		return c, core.Errorf(core.ErrInvalidArgs, "engine config: \"key\" is required")
	}
	return c, nil
}
