package stack

import (
	"encoding/json"
	"errors"
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
		named := ""
		if j, ok := cfg.(RDMAConfigJSON); ok {
			rc, err := decodeRDMAConfig(j, devices)
			if err != nil {
				return nil, err
			}
			cfg, named = rc, rc.Devices
		}
		b, err := f(env, cfg)
		if err != nil && named != "" && errors.Is(err, core.ErrNotSupported) {
			// The user named the device (MORI_RDMA_DEVICES, SGLang's
			// --disaggregation-ib-device): refuse rather than fall back to TCP.
			return nil, core.Errorf(core.ErrRDMAOp, "RDMA device %q was named but is not usable: %v", named, err)
		}
		return b, err
	}
}
