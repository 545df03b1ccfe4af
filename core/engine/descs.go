package engine

import (
	"fmt"

	lru "github.com/hashicorp/golang-lru/v2"

	"github.com/mori-go/mori-go/core"
)

// descCacheSize bounds the decoded memory descriptors an engine keeps: a
// batch names the same few memories call after call, and each is decoded
// once while it stays among the most recently used.
const descCacheSize = 4096

// descCache decodes memory descriptors and remembers the most recently
// used ones by their bytes.
type descCache struct {
	c *lru.Cache[string, core.MemoryDesc]
}

func newDescCache(size int) descCache {
	c, err := lru.New[string, core.MemoryDesc](size)
	if err != nil {
		panic(fmt.Sprintf("descriptor cache of %d entries: %v", size, err)) // size is a constant > 0
	}
	return descCache{c: c}
}

// decode returns the descriptor encoded in b, from the cache when it is
// there. A malformed descriptor is an ErrInvalidArgs error.
func (c descCache) decode(b []byte) (core.MemoryDesc, error) {
	if d, ok := c.c.Get(string(b)); ok {
		return d, nil
	}
	var d core.MemoryDesc
	if err := d.UnmarshalBinary(b); err != nil {
		return d, core.Errorf(core.ErrInvalidArgs, "%w", err)
	}
	c.c.Add(string(b), d)
	return d, nil
}

// forget drops the descriptor encoded in b.
func (c descCache) forget(b []byte) { c.c.Remove(string(b)) }

// DecodeMemoryDesc decodes a memory descriptor as it crossed an API:
// through the engine's cache of recently used descriptors.
func (e *Engine) DecodeMemoryDesc(b []byte) (core.MemoryDesc, error) { return e.descs.decode(b) }

// EncodedRequest is a Request whose memories are still encoded
// descriptors, as they arrive through the C ABI. Refused, when set, is why
// the caller could not even read the request (a null array, say): the
// transfer then fails with it.
type EncodedRequest struct {
	Local, Remote []byte
	Ranges        []core.Range
	UID           uint64
	ElemSize      int // Request.ElemSize
	Refused       error
}

// SubmitEncoded decodes each request's descriptors (through the cache)
// and submits them as Submit does. A request whose descriptors do not
// decode, or that was refused, gets a failed status saying why.
func (e *Engine) SubmitEncoded(op core.Op, reqs []EncodedRequest) []*core.Status {
	out := make([]*core.Status, len(reqs))
	b := newBatch(len(reqs))
	for i := range reqs {
		rq, err := e.decodeRequest(i, &reqs[i])
		if err != nil {
			out[i] = failedStatus(err)
			continue
		}
		out[i] = e.submit(op, &rq, b)
	}
	b.submit()
	return out
}

func (e *Engine) decodeRequest(i int, er *EncodedRequest) (Request, error) {
	if er.Refused != nil {
		return Request{}, fmt.Errorf("transfer %d: %w", i, er.Refused)
	}
	rq := Request{Ranges: er.Ranges, UID: er.UID, ElemSize: er.ElemSize}
	var err error
	if rq.Local, err = e.descs.decode(er.Local); err != nil {
		return rq, fmt.Errorf("transfer %d: local descriptor: %w", i, err)
	}
	if rq.Remote, err = e.descs.decode(er.Remote); err != nil {
		return rq, fmt.Errorf("transfer %d: remote descriptor: %w", i, err)
	}
	return rq, nil
}

// DeregisterMemoryEncoded deregisters the memory an encoded descriptor
// names and drops it from the cache.
func (e *Engine) DeregisterMemoryEncoded(b []byte) error {
	d, err := e.descs.decode(b)
	if err != nil {
		return err
	}
	e.descs.forget(b)
	return e.DeregisterMemory(d)
}

// failedStatus is the status of a transfer refused before it started.
func failedStatus(err error) *core.Status {
	st := core.NewStatus()
	st.Finish(core.CodeOf(err), err.Error())
	return st
}
