// Package sim simulates RC verbs in Go behind the verbs package's
// interfaces, so that the RDMA backend (package transport/rdma) runs, and is tested, on machines
// without a NIC.
//
// A Fabric is created by a test and holds hosts, each with NICs; a Host is
// a verbs.Provider, so rdma.NewFactory(host, opts) gives an engine an RDMA
// backend on it. Two engines in one process then move real bytes between
// their registered memory: the simulator copies through the registered
// addresses.
//
// Modelled: queue pair states and the checks of ibv_modify_qp transitions;
// in-order execution per QP by one worker goroutine; RDMA WRITE, WRITE with
// immediate, READ and SEND with receive queues and RNR; lkey, rkey, access
// and bounds checks (local protection and remote access errors, the
// responder's QP going to the error state too); the error state flushing
// every outstanding send and receive with IBV_WC_WR_FLUSH_ERR; selective
// signaling; completion queues with overflow (IBV_EVENT_CQ_ERR);
// completion channels; asynchronous events.
//
// Faults a test injects: a per-work-request delay, lost packets that are
// retransmitted up to the QP's retry count and then fail with
// IBV_WC_RETRY_EXC_ERR, a partition that makes a peer unreachable, a port
// going down, a QP forced into the error state, a cap on CQ sizes.
//
// Time is compressed: a lost packet is retransmitted after
// Config.RetryInterval instead of the transport timeout.
package sim
