package stack

import (
	"encoding/json"
	"strings"

	"github.com/mori-go/mori-go/core"
	"github.com/mori-go/mori-go/core/engine"
	"github.com/mori-go/mori-go/transport/rdma"
)

// RDMAConfigJSON is an RDMA backend configuration as JSON text, as it
// crosses the C ABI: the fields of MORI-IO's RdmaBackendConfig
// (rdma.Config); "" takes the defaults. An engine assembled here
// accepts it as the configuration of CreateBackend.
type RDMAConfigJSON string

// decodeRDMAConfig reads j with MORI-IO's defaults for the fields it does
// not name; devices is the device filter when j names none.
func decodeRDMAConfig(j RDMAConfigJSON, devices string) (rdma.Config, error) {
	c := rdma.Config{QPPerTransfer: 1, PostBatchSize: -1, EnableNotification: true}
	if strings.TrimSpace(string(j)) != "" {
		if err := json.Unmarshal([]byte(j), &c); err != nil {
			return c, core.Errorf(core.ErrInvalidArgs, "backend config: %v", err)
		}
	}
	if c.Devices == "" {
		c.Devices = devices
	}
	return c, nil
}

// withRDMAConfigJSON lets factory f take an RDMAConfigJSON.
func withRDMAConfigJSON(f engine.Factory, devices string) engine.Factory {
	return func(env core.BackendEnv, cfg any) (core.Backend, error) {
		if j, ok := cfg.(RDMAConfigJSON); ok {
			rc, err := decodeRDMAConfig(j, devices)
			if err != nil {
				return nil, err
			}
			cfg = rc
		}
		return f(env, cfg)
	}
}
