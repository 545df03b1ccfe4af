package main

/*
#include "mori_go.h"
void mg_set_error(const char *msg, size_t len);
void mg_clear_error(void);
*/
import "C"

import (
	"encoding/json"
	"runtime/debug"
	"time"
	"unsafe"

	"github.com/mori-go/mori-go/core"
	"github.com/mori-go/mori-go/core/engine"
	"github.com/mori-go/mori-go/stack"
	"github.com/mori-go/mori-go/transport/tcp"
)

// engineHandle is what an engine handle refers to.
type engineHandle struct {
	e *engine.Engine
}

// result turns err into a return code and sets the thread's last error.
func result(err error) C.int {
	if err == nil {
		return C.MG_OK
	}
	msg := err.Error()
	C.mg_set_error((*C.char)(unsafe.Pointer(unsafe.StringData(msg))), C.size_t(len(msg)))
	return C.int(core.CodeOf(err))
}

// guard recovers a panic into MG_ERR_INTERNAL; every export defers it.
func guard(rc *C.int) {
	if r := recover(); r != nil {
		*rc = result(core.Errorf(core.ErrInternal, "mori-go internal error (please report): %v\n%s", r, debug.Stack()))
	}
}

func goBytes(p *C.uint8_t, n C.size_t) []byte {
	if p == nil || n == 0 {
		return nil
	}
	return unsafe.Slice((*byte)(unsafe.Pointer(p)), int(n))
}

// copyOut writes data to a caller's buffer with the size protocol of the
// header: *outLen always receives the size needed.
func copyOut(buf unsafe.Pointer, capacity C.size_t, data []byte, outLen *C.size_t) error {
	if outLen != nil {
		*outLen = C.size_t(len(data))
	}
	if int(capacity) < len(data) || (buf == nil && len(data) > 0) {
		return core.Errorf(core.ErrInvalidArgs, "output buffer of %d bytes is too small: %d needed", capacity, len(data))
	}
	if len(data) > 0 {
		copy(unsafe.Slice((*byte)(buf), len(data)), data)
	}
	return nil
}

//export mgo_engine_create
func mgo_engine_create(cfgJSON *C.char, out *C.mg_engine_t) (rc C.int) {
	defer guard(&rc)
	if cfgJSON == nil || out == nil {
		return result(core.Errorf(core.ErrInvalidArgs, "mg_engine_create: %v", errNullPointer))
	}
	cfg, err := decodeEngineConfig(C.GoString(cfgJSON))
	if err != nil {
		return result(err)
	}
	ec, err := cfg.stackConfig()
	if err != nil {
		return result(err)
	}
	ec.GPU, err = openGPU(cfg.GPU, ec.Logger)
	if err != nil {
		return result(err)
	}
	e, err := stack.New(ec)
	if err != nil {
		return result(err)
	}
	*out = C.mg_engine_t(handles.add(&engineHandle{e: e}))
	return C.MG_OK
}

//export mgo_engine_destroy
func mgo_engine_destroy(h C.mg_engine_t) (rc C.int) {
	defer guard(&rc)
	eh, err := engineOf(uint64(h))
	if err != nil {
		return result(err)
	}
	handles.remove(uint64(h))
	return result(eh.e.Close())
}

//export mgo_engine_create_backend
func mgo_engine_create_backend(h C.mg_engine_t, typ C.uint32_t, cfgJSON *C.char, actual *C.uint32_t) (rc C.int) {
	defer guard(&rc)
	eh, err := engineOf(uint64(h))
	if err != nil {
		return result(err)
	}
	var backendCfg stack.RDMAConfigJSON
	if cfgJSON != nil {
		backendCfg = stack.RDMAConfigJSON(C.GoString(cfgJSON))
	}
	bt, err := eh.e.CreateBackend(core.BackendType(typ), backendCfg)
	if err != nil {
		return result(err)
	}
	if actual != nil {
		*actual = C.uint32_t(bt)
	}
	return C.MG_OK
}

//export mgo_engine_remove_backend
func mgo_engine_remove_backend(h C.mg_engine_t, typ C.uint32_t) (rc C.int) {
	defer guard(&rc)
	eh, err := engineOf(uint64(h))
	if err != nil {
		return result(err)
	}
	return result(eh.e.RemoveBackend(core.BackendType(typ)))
}

//export mgo_engine_desc
func mgo_engine_desc(h C.mg_engine_t, buf *C.uint8_t, capacity C.size_t, n *C.size_t) (rc C.int) {
	defer guard(&rc)
	eh, err := engineOf(uint64(h))
	if err != nil {
		return result(err)
	}
	d := eh.e.Desc()
	b, err := d.MarshalBinary()
	if err != nil {
		return result(err)
	}
	return result(copyOut(unsafe.Pointer(buf), capacity, b, n))
}

func decodeEngineDesc(p *C.uint8_t, n C.size_t) (core.EngineDesc, error) {
	var d core.EngineDesc
	if err := d.UnmarshalBinary(goBytes(p, n)); err != nil {
		return d, core.Errorf(core.ErrInvalidArgs, "%w", err)
	}
	return d, nil
}

//export mgo_engine_register_remote
func mgo_engine_register_remote(h C.mg_engine_t, p *C.uint8_t, n C.size_t) (rc C.int) {
	defer guard(&rc)
	eh, err := engineOf(uint64(h))
	if err != nil {
		return result(err)
	}
	d, err := decodeEngineDesc(p, n)
	if err != nil {
		return result(err)
	}
	return result(eh.e.AddRemoteEngine(d))
}

//export mgo_engine_deregister_remote
func mgo_engine_deregister_remote(h C.mg_engine_t, p *C.uint8_t, n C.size_t) (rc C.int) {
	defer guard(&rc)
	eh, err := engineOf(uint64(h))
	if err != nil {
		return result(err)
	}
	d, err := decodeEngineDesc(p, n)
	if err != nil {
		return result(err)
	}
	return result(eh.e.DeregisterRemoteEngine(d))
}

//export mgo_register_memory
func mgo_register_memory(h C.mg_engine_t, ptr C.uint64_t, size C.uint64_t, device C.int32_t, loc C.uint32_t, buf *C.uint8_t, capacity C.size_t, n *C.size_t) (rc C.int) {
	defer guard(&rc)
	return result(registerMemory(h, ptr, size, device, loc, core.RegionOptions{}, buf, capacity, n))
}

// registerMemory is mg_register_memory with the options of
// mg_register_memory_opts.
func registerMemory(h C.mg_engine_t, ptr C.uint64_t, size C.uint64_t, device C.int32_t, loc C.uint32_t, opts core.RegionOptions, buf *C.uint8_t, capacity C.size_t, n *C.size_t) error {
	eh, err := engineOf(uint64(h))
	if err != nil {
		return err
	}
	room := int(capacity)
	if buf == nil {
		room = 0
	}
	b, err := eh.e.RegisterMemoryEncoded(uintptr(ptr), uint64(size), int(device), core.MemoryLocation(loc), opts, room)
	if b != nil && n != nil {
		*n = C.size_t(len(b))
	}
	if err != nil {
		return err
	}
	return copyOut(unsafe.Pointer(buf), capacity, b, n)
}

//export mgo_deregister_memory
func mgo_deregister_memory(h C.mg_engine_t, p *C.uint8_t, n C.size_t) (rc C.int) {
	defer guard(&rc)
	eh, err := engineOf(uint64(h))
	if err != nil {
		return result(err)
	}
	return result(eh.e.DeregisterMemoryEncoded(goBytes(p, n)))
}

//export mgo_allocate_uid
func mgo_allocate_uid(h C.mg_engine_t, uid *C.uint64_t) (rc C.int) {
	defer guard(&rc)
	eh, err := engineOf(uint64(h))
	if err != nil {
		return result(err)
	}
	if uid == nil {
		return result(core.Errorf(core.ErrInvalidArgs, "mg_allocate_uid: %v", errNullPointer))
	}
	*uid = C.uint64_t(eh.e.AllocateTransferUID())
	return C.MG_OK
}

// maxUIDBlock bounds one mg_allocate_uids call.
const maxUIDBlock = 1 << 20

//export mgo_allocate_uids
func mgo_allocate_uids(h C.mg_engine_t, count C.uint64_t, first *C.uint64_t) (rc C.int) {
	defer guard(&rc)
	eh, err := engineOf(uint64(h))
	if err != nil {
		return result(err)
	}
	switch {
	case first == nil:
		return result(core.Errorf(core.ErrInvalidArgs, "mg_allocate_uids: %v", errNullPointer))
	case count == 0 || count > maxUIDBlock:
		return result(core.Errorf(core.ErrInvalidArgs, "mg_allocate_uids: count %d: want 1..%d", uint64(count), maxUIDBlock))
	}
	*first = C.uint64_t(eh.e.AllocateTransferUIDs(uint64(count)))
	return C.MG_OK
}

func u64s(p *C.uint64_t, n int) []uint64 {
	if p == nil || n == 0 {
		return nil
	}
	return unsafe.Slice((*uint64)(unsafe.Pointer(p)), n)
}

//export mgo_submit
func mgo_submit(h C.mg_engine_t, op C.uint32_t, xfers *C.mg_transfer_t, n C.size_t, out *C.mg_status_t) (rc C.int) {
	defer guard(&rc)
	return result(submit(h, op, xfers, n, submitOptions{}, out))
}

// submit is mg_submit with the options of mg_submit_opts.
func submit(h C.mg_engine_t, op C.uint32_t, xfers *C.mg_transfer_t, n C.size_t, opts submitOptions, out *C.mg_status_t) error {
	eh, err := engineOf(uint64(h))
	if err != nil {
		return err
	}
	if n == 0 {
		return nil
	}
	if xfers == nil || out == nil {
		return core.Errorf(core.ErrInvalidArgs, "mg_submit: %v", errNullPointer)
	}
	xs := unsafe.Slice(xfers, int(n))
	reqs := make([]engine.EncodedRequest, len(xs))
	for i := range xs {
		reqs[i] = encodedRequest(&xs[i])
		reqs[i].ElemSize = opts.ElemSize
	}
	statuses := eh.e.SubmitEncoded(core.Op(op), reqs)
	outs := unsafe.Slice(out, len(statuses))
	for i, st := range statuses {
		outs[i] = C.mg_status_t(handles.add(st))
	}
	return nil
}

// encodedRequest maps one mg_transfer_t; the engine decodes its
// descriptors and checks it.
func encodedRequest(x *C.mg_transfer_t) engine.EncodedRequest {
	rq := engine.EncodedRequest{
		UID:    uint64(x.uid),
		Local:  goBytes(x.local_desc, x.local_desc_len),
		Remote: goBytes(x.remote_desc, x.remote_desc_len),
	}
	cnt := int(x.count)
	lo, ro, sz := u64s(x.local_offsets, cnt), u64s(x.remote_offsets, cnt), u64s(x.sizes, cnt)
	if cnt > 0 && (lo == nil || ro == nil || sz == nil) {
		rq.Refused = core.Errorf(core.ErrInvalidArgs, "%d ranges but a null offsets or sizes array", cnt)
		return rq
	}
	rq.Ranges = make([]core.Range, cnt)
	for j := range rq.Ranges {
		rq.Ranges[j] = core.Range{LocalOffset: lo[j], RemoteOffset: ro[j], Size: sz[j]}
	}
	return rq
}

//export mgo_status_code
func mgo_status_code(h C.mg_status_t, code *C.uint32_t) (rc C.int) {
	defer guard(&rc)
	st, err := statusOf(uint64(h))
	if err != nil {
		return result(err)
	}
	*code = C.uint32_t(st.Code())
	return C.MG_OK
}

//export mgo_status_message
func mgo_status_message(h C.mg_status_t, buf *C.char, capacity C.size_t, n *C.size_t) (rc C.int) {
	defer guard(&rc)
	st, err := statusOf(uint64(h))
	if err != nil {
		return result(err)
	}
	return result(copyOut(unsafe.Pointer(buf), capacity, []byte(st.Message()), n))
}

func millis(ms C.int64_t) time.Duration {
	if ms < 0 {
		return -1
	}
	return time.Duration(ms) * time.Millisecond
}

//export mgo_status_wait
func mgo_status_wait(h C.mg_status_t, ms C.int64_t, code *C.uint32_t) (rc C.int) {
	defer guard(&rc)
	st, err := statusOf(uint64(h))
	if err != nil {
		return result(err)
	}
	c := st.WaitThread(millis(ms)) // the caller's thread blocks: see core.BlockThread
	if code != nil {
		*code = C.uint32_t(c)
	}
	return C.MG_OK
}

//export mgo_status_release
func mgo_status_release(h C.mg_status_t) (rc C.int) {
	defer guard(&rc)
	if _, ok := handles.remove(uint64(h)).(*core.Status); !ok {
		return result(core.Errorf(core.ErrInvalidArgs, "status handle %d is not valid (released or never returned)", uint64(h)))
	}
	return C.MG_OK
}

//export mgo_wait_all
func mgo_wait_all(hs *C.mg_status_t, n C.size_t, ms C.int64_t, flags C.uint32_t, code *C.uint32_t) (rc C.int) {
	defer guard(&rc)
	if n > 0 && hs == nil {
		return result(core.Errorf(core.ErrInvalidArgs, "mg_wait_all: %v", errNullPointer))
	}
	var sts []*core.Status
	if n > 0 {
		for _, h := range unsafe.Slice(hs, int(n)) {
			if h == 0 { // None in MORI-IO's list: skipped
				continue
			}
			st, err := statusOf(uint64(h))
			if err != nil {
				return result(err)
			}
			sts = append(sts, st)
		}
	}
	var c core.StatusCode
	if flags&C.MG_WAIT_FAIL_FAST != 0 {
		c = core.WaitAllThread(sts, millis(ms))
	} else {
		c = core.WaitEveryThread(sts, millis(ms))
	}
	if code != nil {
		*code = C.uint32_t(c)
	}
	return C.MG_OK
}

//export mgo_pop_inbound
func mgo_pop_inbound(h C.mg_engine_t, key *C.char, uid C.uint64_t, found *C.int32_t, code *C.uint32_t, msg *C.char, capacity C.size_t) (rc C.int) {
	defer guard(&rc)
	eh, err := engineOf(uint64(h))
	if err != nil {
		return result(err)
	}
	if key == nil || found == nil || code == nil {
		return result(core.Errorf(core.ErrInvalidArgs, "mg_pop_inbound: %v", errNullPointer))
	}
	st, ok := eh.e.PopInboundTransferStatus(C.GoString(key), uint64(uid))
	*found = 0
	if ok {
		*found = 1
	}
	*code = C.uint32_t(st.Code)
	if msg != nil && capacity > 0 {
		m := st.Message
		if len(m) >= int(capacity) {
			m = m[:capacity-1]
		}
		dst := unsafe.Slice((*byte)(unsafe.Pointer(msg)), int(capacity))
		copy(dst, m)
		dst[len(m)] = 0
	}
	return C.MG_OK
}

//export mgo_notify
func mgo_notify(h C.mg_engine_t, key *C.char, p *C.uint8_t, n C.size_t) (rc C.int) {
	defer guard(&rc)
	eh, err := engineOf(uint64(h))
	if err != nil {
		return result(err)
	}
	if key == nil {
		return result(core.Errorf(core.ErrInvalidArgs, "mg_notify: %v", errNullPointer))
	}
	return result(eh.e.Notify(C.GoString(key), goBytes(p, n)))
}

//export mgo_pop_notifications
func mgo_pop_notifications(h C.mg_engine_t, buf *C.uint8_t, capacity C.size_t, n *C.size_t) (rc C.int) {
	defer guard(&rc)
	eh, err := engineOf(uint64(h))
	if err != nil {
		return result(err)
	}
	notes := eh.e.PeekNotifications()
	b := engine.PackNotifications(notes)
	if err := copyOut(unsafe.Pointer(buf), capacity, b, n); err != nil {
		return result(err)
	}
	eh.e.DropNotifications(len(notes))
	return C.MG_OK
}

//export mgo_desc_to_json
func mgo_desc_to_json(p *C.uint8_t, n C.size_t, buf *C.char, capacity C.size_t, outLen *C.size_t) (rc C.int) {
	defer guard(&rc)
	d, err := core.DecodeDesc(goBytes(p, n))
	if err != nil {
		return result(err)
	}
	j, err := json.Marshal(d)
	if err != nil {
		return result(err)
	}
	return result(copyOut(unsafe.Pointer(buf), capacity, j, outLen))
}

//export mgo_engine_stats
func mgo_engine_stats(h C.mg_engine_t, buf *C.char, capacity C.size_t, n *C.size_t) (rc C.int) {
	defer guard(&rc)
	eh, err := engineOf(uint64(h))
	if err != nil {
		return result(err)
	}
	backend := ""
	if b := eh.e.DataBackend(); b != nil {
		backend = b.Type().String()
	}
	totals := eh.e.Totals()
	stats := map[string]any{
		"key":                 eh.e.Key(),
		"backend":             backend,
		"rdma_fallback":       eh.e.RDMAFallback(),
		"in_flight":           eh.e.InFlight(),
		"regions":             eh.e.Registry().Len(),
		"inbound_entries":     eh.e.Inbound().Len(),
		"inbound_dropped":     eh.e.Inbound().Dropped(),
		"access_denied":       eh.e.Security().DeniedAccesses,
		"streams_refused":     eh.e.Security().RefusedStreams,
		"handles":             handles.count(),
		"bytes_written":       totals.BytesWritten,
		"bytes_read":          totals.BytesRead,
		"transfers_succeeded": totals.Succeeded,
		"transfers_failed":    totals.Failed,
		"transfer_ns":         totals.TransferNanos,
	}
	if cs, ok := eh.e.DataBackend().(interface{ CompressionStats() tcp.CompressionStats }); ok {
		stats["compression"] = cs.CompressionStats()
	}
	if w, ok := eh.e.DataBackend().(interface{ ResponsesReadByWaiters() uint64 }); ok {
		stats["responses_read_by_waiters"] = w.ResponsesReadByWaiters()
	}
	j, err := json.Marshal(stats)
	if err != nil {
		return result(err)
	}
	return result(copyOut(unsafe.Pointer(buf), capacity, j, n))
}
