// Package verbs is mori-go's RDMA data plane: a core.Backend that moves KV
// cache with one-sided RDMA WRITE and READ over RC queue pairs, as MORI-IO's
// RDMA backend does.
//
// The backend's logic (connections set up when a remote engine is
// registered, send-queue flow control, doorbell batching, completion
// polling and events, inbound notifications, error mapping and QP
// recovery, NIC choice by PCI topology) is written against the small
// interfaces of types.go. Two implementations exist: a thin cgo layer over
// libibverbs, which is opened with dlopen at run time (ibv_linux.go, ibv.c)
// so that the library still loads and runs over TCP where libibverbs is
// missing, and a simulator of RC verbs semantics in package sim, on which
// the tests run.
//
// Factory is the production RDMA factory (an engine.Factory); NewFactory builds one over
// any Provider. See docs/rdma.md for the design, the configuration and the
// state of hardware testing.
package verbs
