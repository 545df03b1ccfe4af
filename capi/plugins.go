package main

import (
	"errors"
	"log/slog"
	"strings"

	"github.com/mori-go/mori-go/core"
	"github.com/mori-go/mori-go/gpu"
)

// The GPU driver serves the TCP backend's staging (core.GPU), the
// same-host path (core.GPUIPC) and GPUDirect RDMA registration
// (core.DmabufExporter); the engine hands it to backends as it is, so that
// they can test it for the optional interfaces.
var _ interface {
	core.GPU
	core.GPUIPC
	core.DmabufExporter
} = (*gpu.Driver)(nil)

// openGPU loads the GPU driver as configured: "auto" (or "") loads CUDA or
// HIP if the process can, "off" loads none, anything else is the path of a
// driver library. Without a driver, the engine accepts GPU registrations
// only of host memory mapped in this process, and treats them as such.
func openGPU(mode string, log *slog.Logger) (core.GPU, error) {
	switch strings.ToLower(mode) {
	case "off", "none":
		return nil, nil
	case "", "auto":
		d, err := gpu.Open(gpu.Options{Logger: log})
		if errors.Is(err, core.ErrNotSupported) {
			log.Debug("no GPU driver found", "reason", err.Error())
			return nil, nil
		}
		if err != nil {
			return nil, core.Errorf(core.ErrGPUOp, "load GPU driver: %w", err)
		}
		return d, nil
	}
	d, err := gpu.Open(gpu.Options{Library: mode, Logger: log})
	if err != nil {
		return nil, core.Errorf(core.ErrGPUOp, "load GPU driver %s: %w", mode, err)
	}
	return d, nil
}
