package main

/*
#include "mori_go.h"
*/
import "C"

import (
	"encoding/json"
	"strings"

	"github.com/mori-go/mori-go/core"
)

// memoryOptions is the JSON options of mg_register_memory_opts.
type memoryOptions struct {
	// ElemSize: the size of the elements the memory holds, for the
	// byte-plane shuffle of compressed writes from it (0: the engine's
	// compress_elem_size, 1: no shuffle).
	ElemSize int `json:"elem_size"`
}

// submitOptions is the JSON options of mg_submit_opts.
type submitOptions struct {
	// ElemSize overrides the local memories' element size for this batch
	// (0: keep theirs, 1: no shuffle).
	ElemSize int `json:"elem_size"`
}

// decodeOptions fills v from the options JSON of call; NULL or "" leaves
// it zero. Unknown fields and element sizes out of bounds are refused.
func decodeOptions(call string, p *C.char, v any, elem *int) error {
	if p == nil {
		return nil
	}
	s := C.GoString(p)
	if strings.TrimSpace(s) == "" {
		return nil
	}
	dec := json.NewDecoder(strings.NewReader(s))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return core.Errorf(core.ErrInvalidArgs, "%s: options: %v", call, err)
	}
	if err := core.CheckElemSize(*elem); err != nil {
		return core.Errorf(core.ErrInvalidArgs, "%s: options: %v", call, err)
	}
	return nil
}

//export mgo_register_memory_opts
func mgo_register_memory_opts(h C.mg_engine_t, ptr C.uint64_t, size C.uint64_t, device C.int32_t, loc C.uint32_t, opts *C.char, buf *C.uint8_t, capacity C.size_t, n *C.size_t) (rc C.int) {
	defer guard(&rc)
	var o memoryOptions
	if err := decodeOptions("mg_register_memory_opts", opts, &o, &o.ElemSize); err != nil {
		return result(err)
	}
	return result(registerMemory(h, ptr, size, device, loc, core.RegionOptions{ElemSize: o.ElemSize}, buf, capacity, n))
}

//export mgo_submit_opts
func mgo_submit_opts(h C.mg_engine_t, op C.uint32_t, xfers *C.mg_transfer_t, n C.size_t, opts *C.char, out *C.mg_status_t) (rc C.int) {
	defer guard(&rc)
	var o submitOptions
	if err := decodeOptions("mg_submit_opts", opts, &o, &o.ElemSize); err != nil {
		return result(err)
	}
	return result(submit(h, op, xfers, n, o, out))
}
