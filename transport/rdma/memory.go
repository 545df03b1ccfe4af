package rdma

import (
	"errors"
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
	home *nic // the NIC nearest the region's GPU: transfers from it go there
}

// RegisterMemory registers a region with every NIC and returns the blob
// carrying its rkey and address per NIC. See register for GPU memory.
func (b *Backend) RegisterMemory(r *core.Region) (*core.BackendBlob, error) {
	rm := &regionMRs{home: b.homeOf(r)}
	x := &dmabufExport{gpu: b.env.GPU, r: r}
	defer x.close()
	for _, n := range b.nics {
		if n.dead.Load() {
			// A placeholder keeps the keys in NIC order; nothing uses a
			// dead NIC.
			rm.mrs = append(rm.mrs, nil)
			rm.keys = append(rm.keys, RemoteKey{IOVA: uint64(r.Addr)})
			continue
		}
		mr, err := register(n, r, x)
		if err != nil {
			for _, mr := range rm.mrs {
				if mr != nil {
					mr.Close()
				}
			}
			return nil, core.Errorf(core.ErrRDMAOp, "rdma: register memory %d (%#x, %d bytes) on %s: %w", r.ID, r.Addr, r.Size, n.name, err)
		}
		rm.mrs = append(rm.mrs, mr)
		rm.keys = append(rm.keys, RemoteKey{RKey: mr.RKey(), IOVA: uint64(r.Addr)})
	}
	b.regionMRs().Store(r, rm)
	return &core.BackendBlob{Type: core.BackendRDMA, Data: encodeMemoryBlob(rm.keys)}, nil
}

// register registers a region with one NIC. Every region is first
// registered by address (ibv_reg_mr, with relaxed ordering where the NIC
// has it), which for GPU memory works with a peer-memory module
// (nvidia-peermem, amdgpu). GPU memory that ibv_reg_mr refuses is then
// registered as a dma-buf that the GPU driver exports (ibv_reg_dmabuf_mr),
// as MORI-IO does: the proprietary NVIDIA modules export no dma-buf, old
// ROCm and rdma-core lack it, and peer memory covers those.
func register(n *nic, r *core.Region, x *dmabufExport) (verbs.MR, error) {
	const access = verbs.AccessLocalWrite | verbs.AccessRemoteWrite | verbs.AccessRemoteRead
	mr, err := n.pd.RegMR(r.Addr, r.Size, access|verbs.AccessRelaxedOrdering)
	if err == nil || r.Host {
		return mr, err
	}
	byAddr := err
	fd, off, err := x.get()
	if err != nil {
		return nil, fmt.Errorf("GPU %d memory: ibv_reg_mr: %v (no peer-memory module loaded?), and no dma-buf to register instead: %w", r.Device, byAddr, err)
	}
	mr, err = n.pd.RegDmabufMR(off, r.Size, uint64(r.Addr), fd, access)
	if err != nil {
		return nil, fmt.Errorf("GPU %d memory: ibv_reg_mr: %v (no peer-memory module loaded?); ibv_reg_dmabuf_mr: %w", r.Device, byAddr, err)
	}
	return mr, nil
}

// dmabufExport exports a GPU region as a dma-buf once, when the first NIC
// needs it.
type dmabufExport struct {
	gpu  core.GPU
	r    *core.Region
	done bool
	fd   int
	off  uint64
	err  error
}

func (x *dmabufExport) get() (int, uint64, error) {
	if x.done {
		return x.fd, x.off, x.err
	}
	x.done, x.fd = true, -1
	exp, ok := x.gpu.(DmabufExporter)
	if !ok {
		x.err = errors.New("the GPU driver exports no dma-buf")
		return x.fd, 0, x.err
	}
	x.fd, x.off, x.err = exp.ExportDmabuf(x.r.Addr, x.r.Size, x.r.Device)
	if x.err != nil {
		x.fd = -1
		x.err = fmt.Errorf("export as dma-buf: %w", x.err)
	}
	return x.fd, x.off, x.err
}

// close closes the exported fd: the MRs keep what they need.
func (x *dmabufExport) close() {
	if x.fd >= 0 && x.done {
		syscall.Close(x.fd)
	}
}

// DeregisterMemory deregisters a region's MRs: once it returns, no NIC
// reads or writes the memory.
func (b *Backend) DeregisterMemory(r *core.Region) {
	rm, ok := b.regionMRs().Detach(r)
	if !ok {
		return
	}
	for _, mr := range rm.mrs {
		if mr == nil {
			continue
		}
		if err := mr.Close(); err != nil {
			b.log.Warn("rdma: deregister memory", "memory", r.ID, "err", err)
		}
	}
}

func regionOf(b *Backend, r *core.Region) *regionMRs {
	rm, _ := b.regionMRs().Load(r)
	return rm
}

// regionMRs is this backend's slot in every region's attachments.
func (b *Backend) regionMRs() core.AttachmentKey[*regionMRs] {
	return core.NewAttachmentKey[*regionMRs](b)
}
