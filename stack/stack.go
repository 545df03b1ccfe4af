// Package stack assembles a mori-go engine with the data planes of this
// build: TCP, the same-host GPU path (IPC) and RDMA over libibverbs. The
// engine (core/engine) imports no data plane and no data plane imports
// the engine; this package is where they meet, for the C ABI, the
// commands and the tests.
package stack

import (
	"github.com/mori-go/mori-go/core"
	"github.com/mori-go/mori-go/core/engine"
	"github.com/mori-go/mori-go/transport/ipc"
	"github.com/mori-go/mori-go/transport/rdma"
	"github.com/mori-go/mori-go/transport/tcp"
)

// Config is an engine's configuration with the data planes of this build.
// The zero data-plane fields give TCP with its defaults, RDMA through the
// host's libibverbs, and the same-host path.
type Config struct {
	engine.Config
	// TCP configures the TCP data plane.
	TCP tcp.Config
	// RDMA builds the RDMA backend; nil uses rdma.Factory (the host's
	// libibverbs). NoRDMA leaves RDMA out.
	RDMA   engine.Factory
	NoRDMA bool
	// RDMADevices is the RDMA device filter (MORI_RDMA_DEVICES syntax) of
	// a backend whose RDMAConfigJSON names none.
	RDMADevices string
}

// Engine returns the engine configuration with the data planes filled in
// where it has none of that type.
func (c Config) Engine() engine.Config {
	cfg := c.Config
	b := make(map[core.BackendType]engine.Factory, len(cfg.Backends)+2)
	for t, f := range cfg.Backends {
		b[t] = f
	}
	if b[core.BackendTCP] == nil {
		b[core.BackendTCP] = tcp.Factory(c.TCP)
	}
	if b[core.BackendRDMA] == nil && !c.NoRDMA {
		f := engine.Factory(rdma.Factory)
		if c.RDMA != nil {
			f = c.RDMA
		}
		b[core.BackendRDMA] = withRDMAConfigJSON(f, c.RDMADevices)
	}
	cfg.Backends = b
	if cfg.SameHost == nil {
		cfg.SameHost = SameHost
	}
	return cfg
}

// New starts an engine with the data planes of c.
func New(c Config) (*engine.Engine, error) {
	return engine.New(c.Engine())
}

// SameHost builds the same-host GPU path (package ipc) for an engine.
func SameHost(env core.BackendEnv) (engine.SameHost, error) {
	b, err := ipc.New(env, ipc.Options{
		NodeID: env.NodeID, Host: env.Host, Port: env.Port,
		Timeout: env.CallTimeout,
	})
	if err != nil {
		return nil, err
	}
	return b, nil
}
