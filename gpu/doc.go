// Package gpu gives the transfer engine what it needs from a GPU driver:
// pointer queries and range checks, copies between device and host memory,
// page-locked staging buffers, IPC handles and dma-buf export.
//
// The driver is loaded at run time with dlopen, never linked: NVIDIA's
// driver API (libcuda.so.1) or AMD's HIP runtime (libamdhip64.so). A process
// without either still loads libmori_go.so; Open then returns an error that
// wraps ErrNotSupported. Open first asks the dynamic linker for a copy that is
// already loaded (RTLD_NOLOAD), so that inside a PyTorch process the engine
// shares torch's copy of the runtime.
//
// CUDA and HIP keep the current context or device per OS thread, and the
// engine runs on threads it shares with Python. Every call that needs a
// device therefore locks its goroutine to the thread, makes the device
// current (cuCtxPushCurrent / hipSetDevice), calls the driver, and puts the
// thread's previous context or device back, so the caller's state is left as
// it was.
//
// Copies run on streams the Driver owns (never the default stream) and are
// synchronous for the caller. Stager pipelines large copies, and gather or
// scatter lists (Span), through a ring of page-locked slots; ReadStaged and
// WriteStaged lend one from the Driver's pool, for the TCP path.
// CopyDeviceBatch runs many device-to-device copies with one wait, and
// IPCExport and IPCMap share allocations between processes, for the
// same-host path. Copy, Span and IPCHandle are aliases of unnamed types, so
// that the Driver satisfies the interfaces of package core (core.GPU,
// core.GPUIPC, core.DmabufExporter) without core importing gpu. Errors that
// mean "no driver" or "the driver lacks this" wrap ErrNotSupported, which
// wraps core.ErrNotSupported.
//
// The package is tested on machines without a GPU against a stand-in driver
// (testdata/standin, built by internal/standin) that implements the calls it
// makes over host memory.
package gpu
