// Public C entry points of libmori_go.so. Each checks that the process was
// not forked after the library was loaded (a Go runtime hangs in a forked
// child) and then calls into Go. The per-thread last-error message lives
// here, in C thread-local storage, because a Go export runs on its caller's
// thread.
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "mori_go.h"
#include "_cgo_export.h"

static volatile int mg_forked = 0;

/* The last-error message of each thread. Only a pointer lives in thread-local
 * storage: a Go c-shared library is marked STATIC_TLS, and glibc keeps very
 * little static TLS spare for libraries loaded later with dlopen (Python's
 * ctypes), so a 4 KiB __thread buffer would make dlopen fail with "cannot
 * allocate memory in static TLS block". The buffer is allocated on first
 * use and freed when the thread exits. */
#define MG_ERR_CAP 4096
static __thread char *mg_err_tls;
static pthread_key_t mg_err_key;
static char mg_err_oom[] = "mori-go: out of memory for the error message";

static void mg_atfork_child(void) { mg_forked = 1; }

__attribute__((constructor)) static void mg_init(void) {
  pthread_key_create(&mg_err_key, free);
  pthread_atfork(NULL, NULL, mg_atfork_child);
}

static char *mg_err_buf(void) {
  if (mg_err_tls == NULL) {
    mg_err_tls = calloc(1, MG_ERR_CAP);
    if (mg_err_tls == NULL) return NULL;
    pthread_setspecific(mg_err_key, mg_err_tls);
  }
  return mg_err_tls;
}

static void mg_set_error_str(const char *msg, size_t n) {
  char *b = mg_err_buf();
  if (b == NULL) return;
  if (n >= MG_ERR_CAP) n = MG_ERR_CAP - 1;
  memcpy(b, msg, n);
  b[n] = 0;
}

__attribute__((visibility("hidden"))) void mg_set_error(const char *msg, size_t n) { mg_set_error_str(msg, n); }

__attribute__((visibility("hidden"))) void mg_clear_error(void) {
  if (mg_err_tls != NULL) mg_err_tls[0] = 0;
}

const char *mg_last_error(void) {
  char *b = mg_err_buf();
  return b == NULL ? mg_err_oom : b;
}

#define MG_CHECK_FORK()                                                                                     \
  do {                                                                                                      \
    if (mg_forked) {                                                                                        \
      static const char m[] =                                                                               \
          "mori-go: this process was forked after libmori_go.so was loaded; the Go runtime inside does "    \
          "not survive fork(): start worker processes with the 'spawn' method";                             \
      mg_set_error_str(m, sizeof m - 1);                                                                    \
      return MG_ERR_FORKED;                                                                                 \
    }                                                                                                       \
  } while (0)

uint32_t mg_abi_version(void) { return MG_ABI_VERSION; }

const char *mg_version(void) { return "mori-go 0.1.0"; }

int mg_engine_create(const char *config_json, mg_engine_t *out) {
  MG_CHECK_FORK();
  return mgo_engine_create((char *)config_json, out);
}

int mg_engine_destroy(mg_engine_t engine) {
  MG_CHECK_FORK();
  return mgo_engine_destroy(engine);
}

int mg_engine_create_backend(mg_engine_t engine, uint32_t type, const char *config_json, uint32_t *actual) {
  MG_CHECK_FORK();
  return mgo_engine_create_backend(engine, type, (char *)config_json, actual);
}

int mg_engine_remove_backend(mg_engine_t engine, uint32_t type) {
  MG_CHECK_FORK();
  return mgo_engine_remove_backend(engine, type);
}

int mg_engine_desc(mg_engine_t engine, uint8_t *buf, size_t cap, size_t *len) {
  MG_CHECK_FORK();
  return mgo_engine_desc(engine, buf, cap, len);
}

int mg_engine_register_remote(mg_engine_t engine, const uint8_t *desc, size_t len) {
  MG_CHECK_FORK();
  return mgo_engine_register_remote(engine, (uint8_t *)desc, len);
}

int mg_engine_deregister_remote(mg_engine_t engine, const uint8_t *desc, size_t len) {
  MG_CHECK_FORK();
  return mgo_engine_deregister_remote(engine, (uint8_t *)desc, len);
}

int mg_register_memory(mg_engine_t engine, uint64_t ptr, uint64_t size, int32_t device, uint32_t location,
                       uint8_t *desc_out, size_t cap, size_t *len) {
  MG_CHECK_FORK();
  return mgo_register_memory(engine, ptr, size, device, location, desc_out, cap, len);
}

int mg_register_memory_opts(mg_engine_t engine, uint64_t ptr, uint64_t size, int32_t device, uint32_t location,
                            const char *options_json, uint8_t *desc_out, size_t cap, size_t *len) {
  MG_CHECK_FORK();
  return mgo_register_memory_opts(engine, ptr, size, device, location, (char *)options_json, desc_out, cap, len);
}

int mg_deregister_memory(mg_engine_t engine, const uint8_t *desc, size_t len) {
  MG_CHECK_FORK();
  return mgo_deregister_memory(engine, (uint8_t *)desc, len);
}

int mg_allocate_uid(mg_engine_t engine, uint64_t *uid) {
  MG_CHECK_FORK();
  return mgo_allocate_uid(engine, uid);
}

int mg_allocate_uids(mg_engine_t engine, uint64_t count, uint64_t *first) {
  MG_CHECK_FORK();
  return mgo_allocate_uids(engine, count, first);
}

int mg_submit(mg_engine_t engine, uint32_t op, const mg_transfer_t *xfers, size_t n, mg_status_t *statuses) {
  MG_CHECK_FORK();
  return mgo_submit(engine, op, (mg_transfer_t *)xfers, n, statuses);
}

int mg_submit_opts(mg_engine_t engine, uint32_t op, const mg_transfer_t *xfers, size_t n, const char *options_json,
                   mg_status_t *statuses) {
  MG_CHECK_FORK();
  return mgo_submit_opts(engine, op, (mg_transfer_t *)xfers, n, (char *)options_json, statuses);
}

int mg_status_code(mg_status_t status, uint32_t *code) {
  MG_CHECK_FORK();
  return mgo_status_code(status, code);
}

int mg_status_message(mg_status_t status, char *buf, size_t cap, size_t *len) {
  MG_CHECK_FORK();
  return mgo_status_message(status, buf, cap, len);
}

int mg_status_wait(mg_status_t status, int64_t timeout_ms, uint32_t *code) {
  MG_CHECK_FORK();
  return mgo_status_wait(status, timeout_ms, code);
}

int mg_status_release(mg_status_t status) {
  MG_CHECK_FORK();
  return mgo_status_release(status);
}

int mg_wait_all(const mg_status_t *statuses, size_t n, int64_t timeout_ms, uint32_t *code) {
  MG_CHECK_FORK();
  return mgo_wait_all((mg_status_t *)statuses, n, timeout_ms, 0, code);
}

int mg_wait_all_flags(const mg_status_t *statuses, size_t n, int64_t timeout_ms, uint32_t flags, uint32_t *code) {
  MG_CHECK_FORK();
  return mgo_wait_all((mg_status_t *)statuses, n, timeout_ms, flags, code);
}

int mg_pop_inbound(mg_engine_t engine, const char *remote_key, uint64_t uid, int32_t *found, uint32_t *code,
                   char *msg, size_t cap) {
  MG_CHECK_FORK();
  return mgo_pop_inbound(engine, (char *)remote_key, uid, found, code, msg, cap);
}

int mg_notify(mg_engine_t engine, const char *remote_key, const uint8_t *msg, size_t len) {
  MG_CHECK_FORK();
  return mgo_notify(engine, (char *)remote_key, (uint8_t *)msg, len);
}

int mg_pop_notifications(mg_engine_t engine, uint8_t *buf, size_t cap, size_t *len) {
  MG_CHECK_FORK();
  return mgo_pop_notifications(engine, buf, cap, len);
}

int mg_desc_to_json(const uint8_t *desc, size_t len, char *buf, size_t cap, size_t *out_len) {
  MG_CHECK_FORK();
  return mgo_desc_to_json((uint8_t *)desc, len, buf, cap, out_len);
}

int mg_engine_stats(mg_engine_t engine, char *buf, size_t cap, size_t *len) {
  MG_CHECK_FORK();
  return mgo_engine_stats(engine, buf, cap, len);
}
