package core

import "sync"

// Attachments hold the state that backends attach to a region at
// registration (an RDMA memory region, a GPU IPC export), one value per
// backend, keyed by the backend itself. Backends go through an
// AttachmentKey, which types the value.
type Attachments struct {
	m sync.Map
}

// AttachmentKey is one backend's slot, holding a T, in every region's
// Attachments.
type AttachmentKey[T any] struct {
	owner any
}

// NewAttachmentKey returns the slot of owner (a backend) for values of
// type T.
func NewAttachmentKey[T any](owner any) AttachmentKey[T] { return AttachmentKey[T]{owner: owner} }

// Store attaches v to r.
func (k AttachmentKey[T]) Store(r *Region, v T) { r.Attachments.m.Store(k.owner, v) }

// Load returns the value attached to r, if any.
func (k AttachmentKey[T]) Load(r *Region) (T, bool) {
	return typed[T](r.Attachments.m.Load(k.owner))
}

// Detach removes the value attached to r and returns it, if any.
func (k AttachmentKey[T]) Detach(r *Region) (T, bool) {
	return typed[T](r.Attachments.m.LoadAndDelete(k.owner))
}

func typed[T any](v any, ok bool) (T, bool) {
	t, isT := v.(T)
	return t, ok && isT
}
