// Package verbs is mori-go's binding of libibverbs: the small interfaces of
// types.go (Provider, Context, PD, MR, CQ, CompChannel, QP) with the verbs
// types and constants they carry, and their implementation over the host's
// libibverbs, which is opened with dlopen at run time (ibv_linux.go, ibv.c)
// so that the library still loads and runs over TCP where libibverbs is
// missing. Package sim implements the same interfaces in Go.
//
// The RDMA data plane written against these interfaces is package
// transport/rdma; see docs/rdma.md.
package verbs
