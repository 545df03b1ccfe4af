// Package rdma is mori-go's RDMA data plane: a core.Backend that moves KV
// cache with one-sided RDMA WRITE and READ over RC queue pairs, as MORI-IO's
// RDMA backend does.
//
// The backend's logic (connections set up when a remote engine is
// registered, send-queue flow control, doorbell batching, completion
// polling and events, inbound notifications, error mapping and QP
// recovery, NIC choice by PCI topology) is written against the interfaces
// of package verbs: the cgo binding of libibverbs in production
// (verbs.System) and the simulator of package verbs/sim in the tests.
//
// Factory is the production RDMA factory (an engine.Factory); NewFactory
// builds one over any verbs.Provider. See docs/rdma.md for the design, the
// configuration and the state of hardware testing.
package rdma
