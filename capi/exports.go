package main

/*
#include "mori_go.h"
void mg_set_error(const char *msg, size_t len);
void mg_clear_error(void);
*/
import "C"

import (
	"encoding/binary"
	"encoding/json"
	"fmt"
	"runtime/debug"
	"time"
	"unsafe"

	"github.com/mori-go/mori-go/core"
	"github.com/mori-go/mori-go/core/engine"
	"github.com/mori-go/mori-go/stack"
)

// engineHandle is what an engine handle refers to.
type engineHandle struct {
	e     *engine.Engine
	descs descCache
	rdma  string // configured RDMA devices
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
	ec, err := cfg.engineConfig()
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
	*out = C.mg_engine_t(handles.add(&engineHandle{e: e, rdma: cfg.RDMADevices}))
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
	s := ""
	if cfgJSON != nil {
		s = C.GoString(cfgJSON)
	}
	rc2, err := decodeRDMAConfig(s)
	if err != nil {
		return result(err)
	}
	if rc2.Devices == "" {
		rc2.Devices = eh.rdma
	}
	bt, err := eh.e.CreateBackend(core.BackendType(typ), rc2)
	if err != nil {
		return result(err)
	}
	if actual != nil {
		*actual = C.uint32_t(bt)
	}
	return C.MG_OK
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
	return result(eh.e.RegisterRemoteEngine(d))
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
	eh, err := engineOf(uint64(h))
	if err != nil {
		return result(err)
	}
	d, err := eh.e.RegisterMemory(uintptr(ptr), uint64(size), int(device), core.MemoryLocation(loc))
	if err != nil {
		return result(err)
	}
	b, err := d.MarshalBinary()
	if err == nil {
		err = copyOut(unsafe.Pointer(buf), capacity, b, n)
	}
	if err != nil {
		eh.e.DeregisterMemory(d)
		return result(err)
	}
	return C.MG_OK
}

//export mgo_deregister_memory
func mgo_deregister_memory(h C.mg_engine_t, p *C.uint8_t, n C.size_t) (rc C.int) {
	defer guard(&rc)
	eh, err := engineOf(uint64(h))
	if err != nil {
		return result(err)
	}
	b := goBytes(p, n)
	d, err := eh.descs.get(b)
	if err != nil {
		return result(err)
	}
	eh.descs.forget(b)
	return result(eh.e.DeregisterMemory(d))
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

func u64s(p *C.uint64_t, n int) []uint64 {
	if p == nil || n == 0 {
		return nil
	}
	return unsafe.Slice((*uint64)(unsafe.Pointer(p)), n)
}

//export mgo_submit
func mgo_submit(h C.mg_engine_t, op C.uint32_t, xfers *C.mg_transfer_t, n C.size_t, out *C.mg_status_t) (rc C.int) {
	defer guard(&rc)
	eh, err := engineOf(uint64(h))
	if err != nil {
		return result(err)
	}
	if n == 0 {
		return C.MG_OK
	}
	if xfers == nil || out == nil {
		return result(core.Errorf(core.ErrInvalidArgs, "mg_submit: %v", errNullPointer))
	}
	xs := unsafe.Slice(xfers, int(n))
	reqs := make([]engine.Request, len(xs))
	bad := make([]error, len(xs)) // requests refused while decoding, failed below
	for i := range xs {
		x := &xs[i]
		rq := &reqs[i]
		rq.UID = uint64(x.uid)
		if rq.Local, err = eh.descs.get(goBytes(x.local_desc, x.local_desc_len)); err != nil {
			bad[i] = fmt.Errorf("transfer %d: local descriptor: %w", i, err)
			continue
		}
		if rq.Remote, err = eh.descs.get(goBytes(x.remote_desc, x.remote_desc_len)); err != nil {
			bad[i] = fmt.Errorf("transfer %d: remote descriptor: %w", i, err)
			continue
		}
		cnt := int(x.count)
		lo, ro, sz := u64s(x.local_offsets, cnt), u64s(x.remote_offsets, cnt), u64s(x.sizes, cnt)
		if cnt > 0 && (lo == nil || ro == nil || sz == nil) {
			bad[i] = core.Errorf(core.ErrInvalidArgs, "transfer %d: %d ranges but a null offsets or sizes array", i, cnt)
			continue
		}
		rs := make([]core.Range, cnt)
		for j := range rs {
			rs[j] = core.Range{LocalOffset: lo[j], RemoteOffset: ro[j], Size: sz[j]}
		}
		rq.Ranges = rs
	}
	statuses := make([]*core.Status, len(reqs))
	good := reqs[:0:0]
	var idx []int
	for i := range reqs {
		if bad[i] != nil {
			st := core.NewStatus()
			st.Finish(core.CodeOf(bad[i]), bad[i].Error())
			statuses[i] = st
			continue
		}
		good = append(good, reqs[i])
		idx = append(idx, i)
	}
	for k, st := range eh.e.Submit(core.Op(op), good) {
		statuses[idx[k]] = st
	}
	outs := unsafe.Slice(out, len(statuses))
	for i, st := range statuses {
		outs[i] = C.mg_status_t(handles.add(st))
	}
	return C.MG_OK
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
	c := st.Wait(millis(ms))
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
func mgo_wait_all(hs *C.mg_status_t, n C.size_t, ms C.int64_t, code *C.uint32_t) (rc C.int) {
	defer guard(&rc)
	if n > 0 && hs == nil {
		return result(core.Errorf(core.ErrInvalidArgs, "mg_wait_all: %v", errNullPointer))
	}
	var sts []*core.Status
	if n > 0 {
		for _, h := range unsafe.Slice(hs, int(n)) {
			st, err := statusOf(uint64(h))
			if err != nil {
				return result(err)
			}
			sts = append(sts, st)
		}
	}
	c := core.WaitAll(sts, millis(ms))
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
	var b []byte
	for _, m := range notes {
		b = binary.LittleEndian.AppendUint16(b, uint16(len(m.From)))
		b = append(b, m.From...)
		b = binary.LittleEndian.AppendUint32(b, uint32(len(m.Data)))
		b = append(b, m.Data...)
	}
	if err := copyOut(unsafe.Pointer(buf), capacity, b, n); err != nil {
		return result(err)
	}
	eh.e.DropNotifications(len(notes))
	return C.MG_OK
}

//export mgo_desc_to_json
func mgo_desc_to_json(p *C.uint8_t, n C.size_t, buf *C.char, capacity C.size_t, outLen *C.size_t) (rc C.int) {
	defer guard(&rc)
	b := goBytes(p, n)
	var v any
	var ed core.EngineDesc
	var md core.MemoryDesc
	if err := ed.UnmarshalBinary(b); err == nil {
		v = map[string]any{"kind": "engine", "key": ed.Key, "node_id": ed.NodeID, "hostname": ed.Hostname,
			"host": ed.Host, "port": ed.Port, "pid": ed.PID, "backends": blobTypes(ed.Backends)}
	} else if err2 := md.UnmarshalBinary(b); err2 == nil {
		v = map[string]any{"kind": "memory", "engine_key": md.EngineKey, "id": md.ID, "device_id": md.Device,
			"location": md.Location, "data": md.Addr, "size": md.Size, "device_bus_id": md.DeviceBusID,
			"numa_node": md.NUMANode, "backends": blobTypes(md.Backends)}
	} else {
		return result(core.Errorf(core.ErrInvalidArgs, "not a descriptor: %v; %v", err, err2))
	}
	j, err := json.Marshal(v)
	if err != nil {
		return result(err)
	}
	return result(copyOut(unsafe.Pointer(buf), capacity, j, outLen))
}

func blobTypes(bs []core.BackendBlob) []string {
	out := []string{}
	for _, b := range bs {
		out = append(out, b.Type.String())
	}
	return out
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
	j, err := json.Marshal(map[string]any{
		"key":             eh.e.Key(),
		"backend":         backend,
		"in_flight":       eh.e.InFlight(),
		"regions":         eh.e.Registry().Len(),
		"inbound_entries": eh.e.Inbound().Len(),
		"inbound_dropped": eh.e.Inbound().Dropped(),
		"handles":         handles.count(),
	})
	if err != nil {
		return result(err)
	}
	return result(copyOut(unsafe.Pointer(buf), capacity, j, n))
}
