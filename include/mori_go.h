/*
 * mori_go.h - C ABI of mori-go, a KV-cache transfer engine for LLM
 * prefill/decode disaggregation (the job of AMD's MORI-IO, over TCP or RDMA).
 *
 * Conventions
 *  - Every function returns an mg_code: MG_OK (0) or an error code. After an
 *    error, mg_last_error() returns a message for the calling thread.
 *  - Handles (engines, statuses) are opaque 64-bit integers; 0 is never valid.
 *  - Descriptors (engine and memory) are opaque byte strings to send to peers.
 *  - Memory handed to the engine (register_memory) must stay valid until it is
 *    deregistered. No pointer passed in is kept after a call returns: arrays
 *    of offsets and sizes are copied.
 *  - Transfers are asynchronous: mg_submit returns one status handle per
 *    transfer at once; poll or wait on it, then release it.
 *  - The library hosts a Go runtime: it does not survive fork(). In a forked
 *    child every call fails with MG_ERR_FORKED instead of hanging.
 */
#ifndef MORI_GO_H
#define MORI_GO_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define MG_ABI_VERSION 1u

typedef uint64_t mg_engine_t;
typedef uint64_t mg_status_t;

/* Status and error codes; the values up to MG_ERR_GPU_OP match MORI-IO's
 * StatusCode. Every code above MG_ERR_BEGIN is a failure. */
typedef enum mg_code {
  MG_OK = 0, /* also the SUCCESS state of a transfer */
  MG_INIT = 1,
  MG_IN_PROGRESS = 2,
  MG_ERR_BEGIN = 10,
  MG_ERR_INVALID_ARGS = 11,
  MG_ERR_NOT_FOUND = 12,
  MG_ERR_RDMA_OP = 13,
  MG_ERR_BAD_STATE = 14,
  MG_ERR_GPU_OP = 15,
  MG_ERR_TIMEOUT = 16,
  MG_ERR_CONNECTION = 17,
  MG_ERR_REMOTE = 18,
  MG_ERR_INTERNAL = 19,
  MG_ERR_FORKED = 20
} mg_code;

typedef enum mg_backend {
  MG_BACKEND_RDMA = 2, /* RDMA where a device is usable, else TCP */
  MG_BACKEND_TCP = 3
} mg_backend;

typedef enum mg_location { MG_LOC_CPU = 1, MG_LOC_GPU = 2 } mg_location;

typedef enum mg_op { MG_OP_WRITE = 1, MG_OP_READ = 2 } mg_op;

/* One transfer of a batch: count ranges between one local and one remote
 * memory, under one uid. */
typedef struct mg_transfer {
  const uint8_t *local_desc;
  size_t local_desc_len;
  const uint8_t *remote_desc;
  size_t remote_desc_len;
  const uint64_t *local_offsets;
  const uint64_t *remote_offsets;
  const uint64_t *sizes;
  size_t count;
  uint64_t uid;
} mg_transfer_t;

/* Version of this ABI in the loaded library; compare with MG_ABI_VERSION. */
uint32_t mg_abi_version(void);
/* Library version string (static). */
const char *mg_version(void);
/* Message of the last error on this thread ("" if none). Valid until the
 * next call on this thread. */
const char *mg_last_error(void);

/* Create an engine. config_json is a JSON object: {"key": "...", "host":
 * "10.0.0.1", "port": 0, "secret": "", "backend": "auto|tcp|rdma",
 * "transfer_timeout_ms": 60000, "log_level": "warn", "tcp": {"streams": 4,
 * "chunk_size": 1048576, "compression": "off|s2|zstd|auto",
 * "compress_elem_size": 0, "busy_poll_us": 50, "congestion": ""},
 * "rdma_devices": "", "tls": {"cert": "engine.crt", "key": "engine.key", "ca":
 * "ca.crt"}}. Only "key" is required; "tls" (PEM files, all three) turns on
 * TLS 1.3 on the control and data planes (docs/security.md); "busy_poll_us"
 * is how long a thread in mg_wait_all or mg_status_wait polls the TCP socket
 * for its acknowledgement before sleeping (0: the default, 50; negative:
 * never; docs/benchmarks.md); "congestion" is the TCP congestion control of
 * the data streams ("cubic", "reno", ...; empty: the system's; one the kernel
 * lacks or does not allow fails mg_engine_create_backend); compression of TCP
 * writes is described in docs/compression.md. */
int mg_engine_create(const char *config_json, mg_engine_t *out);
int mg_engine_destroy(mg_engine_t engine);
/* Start the data plane; *actual receives the backend type in use. */
int mg_engine_create_backend(mg_engine_t engine, uint32_t type, const char *config_json, uint32_t *actual);
/* Stop the data plane of this type (MORI-IO's remove_backend): its
 * transfers fail, new ones fail until a backend is created again, and peers
 * are connected again over the new one at their next transfer (peers must
 * register this engine's new descriptor to reach it). A type not running is
 * no error. */
int mg_engine_remove_backend(mg_engine_t engine, uint32_t type);
/* Copy the engine descriptor into buf. If cap is too small, returns
 * MG_ERR_INVALID_ARGS and sets *len to the size needed. */
int mg_engine_desc(mg_engine_t engine, uint8_t *buf, size_t cap, size_t *len);
/* Make a peer known and return at once (as MORI-IO): the handshake and the
 * data-plane connections are made in the background. Transfers to the peer
 * wait for them; a peer that cannot be reached fails the transfers (the
 * first one after a backoff tries again), not this call. */
int mg_engine_register_remote(mg_engine_t engine, const uint8_t *desc, size_t len);
/* Forget a peer; its transfers fail. An unknown peer is no error. */
int mg_engine_deregister_remote(mg_engine_t engine, const uint8_t *desc, size_t len);

/* Register memory; device is the GPU ordinal (-1 for CPU memory). The memory
 * descriptor is written to desc_out as in mg_engine_desc. The memory is
 * registered once whatever the buffer: when cap is too small the call
 * returns MG_ERR_INVALID_ARGS with *len set and keeps the registration, and
 * the next call with the same ptr, size, device and location returns its
 * descriptor instead of registering again. */
int mg_register_memory(mg_engine_t engine, uint64_t ptr, uint64_t size, int32_t device, uint32_t location,
                       uint8_t *desc_out, size_t cap, size_t *len);
/* mg_register_memory with options: options_json is a JSON object, NULL or
 * "" for none. {"elem_size": 2} says the memory holds elements of 2 bytes
 * (bf16, fp16): compressed TCP writes from it shuffle their bytes into
 * planes first (docs/compression.md); 0 takes the engine's
 * "compress_elem_size", 1 means no shuffle, at most 16. Unknown fields are
 * refused (MG_ERR_INVALID_ARGS). */
int mg_register_memory_opts(mg_engine_t engine, uint64_t ptr, uint64_t size, int32_t device, uint32_t location,
                            const char *options_json, uint8_t *desc_out, size_t cap, size_t *len);
/* Deregister memory; memory not registered (any more) is no error. */
int mg_deregister_memory(mg_engine_t engine, const uint8_t *desc, size_t len);

int mg_allocate_uid(mg_engine_t engine, uint64_t *uid);
/* Reserve count (1 to 2^20) consecutive transfer uids, unique in the
 * engine as mg_allocate_uid's are; *first receives the first of them. A
 * caller that hands them out itself saves a call per transfer. */
int mg_allocate_uids(mg_engine_t engine, uint64_t count, uint64_t *first);
/* Start n transfers (op is mg_op). statuses[i] receives a handle for each,
 * also for transfers that failed at once (their status says why). */
int mg_submit(mg_engine_t engine, uint32_t op, const mg_transfer_t *xfers, size_t n, mg_status_t *statuses);
/* mg_submit with options for the whole batch: options_json is a JSON
 * object, NULL or "" for none. {"elem_size": 2} shuffles the batch's
 * compressed writes by 2-byte elements whatever the local memories were
 * registered with (0 keeps theirs, 1 means no shuffle, at most 16). Bad
 * options fail the call (MG_ERR_INVALID_ARGS) and start nothing. */
int mg_submit_opts(mg_engine_t engine, uint32_t op, const mg_transfer_t *xfers, size_t n, const char *options_json,
                   mg_status_t *statuses);

int mg_status_code(mg_status_t status, uint32_t *code);
/* Copy the status message; same size protocol as mg_engine_desc. */
int mg_status_message(mg_status_t status, char *buf, size_t cap, size_t *len);
/* Wait until terminal or timeout_ms passes (<0 forever, 0 poll). */
int mg_status_wait(mg_status_t status, int64_t timeout_ms, uint32_t *code);
int mg_status_release(mg_status_t status);
/* Wait for all, as MORI-IO's wait_all: until every status is terminal or
 * timeout_ms passes (<0 forever, 0 poll). *code is the first failure in
 * the order given, else MG_OK, or MG_IN_PROGRESS when the time ran out with
 * no failure yet. A 0 handle is skipped (MORI-IO skips None). */
int mg_wait_all(const mg_status_t *statuses, size_t n, int64_t timeout_ms, uint32_t *code);
/* Flags of mg_wait_all_flags. MG_WAIT_FAIL_FAST: return as soon as any
 * status has failed, with its code, without waiting for the others. */
#define MG_WAIT_FAIL_FAST 1u
/* mg_wait_all with flags (0: mg_wait_all itself). */
int mg_wait_all_flags(const mg_status_t *statuses, size_t n, int64_t timeout_ms, uint32_t flags, uint32_t *code);

/* Target side: what is known of the transfer remote_key made under uid.
 * *found is 0 if nothing; a terminal entry is freed by the call. */
int mg_pop_inbound(mg_engine_t engine, const char *remote_key, uint64_t uid, int32_t *found, uint32_t *code,
                   char *msg, size_t cap);

/* Send a small message to a registered remote engine. */
int mg_notify(mg_engine_t engine, const char *remote_key, const uint8_t *msg, size_t len);
/* Pop received notifications, packed as repeated [u16 key_len][key][u32
 * len][data] (little-endian); same size protocol as mg_engine_desc (nothing
 * is popped when cap is too small). */
int mg_pop_notifications(mg_engine_t engine, uint8_t *buf, size_t cap, size_t *len);

/* Decode an engine or memory descriptor into JSON text. */
int mg_desc_to_json(const uint8_t *desc, size_t len, char *buf, size_t cap, size_t *out_len);

/* Counters as JSON text: in-flight transfers, registered regions, inbound
 * entries, backend; access_denied (accesses with a wrong memory token) and
 * streams_refused (data streams, and control-plane TLS connections, refused)
 * among them; rdma_fallback says why
 * RDMA was asked for and TCP serves ("" when that did not happen); on TCP,
 * responses_read_by_waiters counts the acknowledgements that a thread
 * waiting in mg_wait_all or mg_status_wait read from the socket itself. */
int mg_engine_stats(mg_engine_t engine, char *buf, size_t cap, size_t *len);

#ifdef __cplusplus
}
#endif

#endif /* MORI_GO_H */
