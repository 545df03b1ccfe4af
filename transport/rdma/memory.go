package rdma

import (
	"fmt"
	"syscall"

	"github.com/mori-go/mori-go/core"
	"github.com/mori-go/mori-go/verbs"
)

// regionMRs is what the backend attaches to a registered region: one MR
// per NIC.
type regionMRs struct {
	mrs  []verbs.MR
	keys []RemoteKey
}

// RegisterMemory registers a region with every NIC and returns the blob
// carrying its rkey and address per NIC. GPU memory is registered by
// dma-buf when the GPU driver exports one, else as a plain address (which
// needs a peer-memory kernel module).
func (b *Backend) RegisterMemory(r *core.Region) (*core.BackendBlob, error) {
	access := verbs.AccessLocalWrite | verbs.AccessRemoteWrite | verbs.AccessRemoteRead
	rm := &regionMRs{}
	fail := func(err error) (*core.BackendBlob, error) {
		for _, mr := range rm.mrs {
			mr.Close()
		}
		return nil, core.Errorf(core.ErrRDMAOp, "rdma: register memory %d (%#x, %d bytes): %w", r.ID, r.Addr, r.Size, err)
	}
	dmabuf, fd, off := false, -1, uint64(0)
	if !r.Host {
		if x, ok := b.env.GPU.(DmabufExporter); ok {
			var err error
			if fd, off, err = x.ExportDmabuf(r.Addr, r.Size, r.Device); err != nil {
				return fail(fmt.Errorf("export GPU %d memory as dma-buf: %w", r.Device, err))
			}
			defer syscall.Close(fd)
			dmabuf = true
		}
	}
	for _, n := range b.nics {
		var mr verbs.MR
		var err error
		if dmabuf {
			mr, err = n.pd.RegDmabufMR(off, r.Size, uint64(r.Addr), fd, access)
		} else {
			mr, err = n.pd.RegMR(r.Addr, r.Size, access)
		}
		if err != nil {
			return fail(fmt.Errorf("%s: %w", n.name, err))
		}
		rm.mrs = append(rm.mrs, mr)
		rm.keys = append(rm.keys, RemoteKey{RKey: mr.RKey(), IOVA: uint64(r.Addr)})
	}
	r.Attachments.Store(b, rm)
	return &core.BackendBlob{Type: core.BackendRDMA, Data: encodeMemoryBlob(rm.keys)}, nil
}

// DeregisterMemory deregisters a region's MRs: once it returns, no NIC
// reads or writes the memory.
func (b *Backend) DeregisterMemory(r *core.Region) {
	v, ok := r.Attachments.LoadAndDelete(b)
	if !ok {
		return
	}
	for _, mr := range v.(*regionMRs).mrs {
		if err := mr.Close(); err != nil {
			b.log.Warn("rdma: deregister memory", "memory", r.ID, "err", err)
		}
	}
}

func regionOf(b *Backend, r *core.Region) *regionMRs {
	if v, ok := r.Attachments.Load(b); ok {
		return v.(*regionMRs)
	}
	return nil
}
