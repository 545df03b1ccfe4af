// Package core holds the transport-neutral parts of the mori-go transfer
// engine: engine and memory descriptors with their versioned wire encoding,
// the local memory registry with its bounds checks, transfer statuses,
// the table of inbound transfer statuses, and the Backend interface that the
// TCP and RDMA data planes implement.
//
// Nothing in this package does I/O. The engine that wires these pieces to a
// control plane and to backends lives in core/engine; the data planes live in
// transport/ (tcp, ipc) and verbs; package stack assembles them.
package core
