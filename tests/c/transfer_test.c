/* Two mori-go engines in one process move bytes through the C ABI, and the
 * ABI's error paths answer with codes and messages. Prints "N passed, N
 * failed" and exits non-zero on any failure. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mori_go.h"

static int passed, failed;

#define CHECK(cond, ...)                              \
  do {                                                \
    if (cond) {                                       \
      passed++;                                       \
    } else {                                          \
      failed++;                                       \
      fprintf(stderr, "FAIL %s:%d: ", __FILE__, __LINE__); \
      fprintf(stderr, __VA_ARGS__);                   \
      fprintf(stderr, " (last error: %s)\n", mg_last_error()); \
    }                                                 \
  } while (0)

typedef struct {
  uint8_t bytes[1024];
  size_t len;
} blob;

/* make_engine_with makes an engine with extra JSON members (tcp) in its
 * configuration. */
static mg_engine_t make_engine_with(const char *key, const char *extra, blob *desc) {
  char cfg[512];
  mg_engine_t e = 0;
  uint32_t actual = 0;
  snprintf(cfg, sizeof cfg, "{\"key\": \"%s\", \"host\": \"127.0.0.1\"%s}", key, extra);
  CHECK(mg_engine_create(cfg, &e) == MG_OK && e != 0, "create engine %s", key);
  CHECK(mg_engine_create_backend(e, MG_BACKEND_RDMA, NULL, &actual) == MG_OK, "create backend");
  CHECK(actual == MG_BACKEND_TCP, "no RDMA device here: expected TCP, got %u", actual);
  CHECK(mg_engine_desc(e, desc->bytes, sizeof desc->bytes, &desc->len) == MG_OK, "engine desc");
  return e;
}

static mg_engine_t make_engine(const char *key, blob *desc) { return make_engine_with(key, "", desc); }

/* shuffled reports whether an engine's stats count shuffled frames. */
static int shuffled(mg_engine_t e) {
  char stats[8192];
  size_t n = 0;
  if (mg_engine_stats(e, stats, sizeof stats, &n) != MG_OK) return -1;
  return strstr(stats, "\"shuffled_frames_out\":0,") == NULL;
}

/* Element sizes through the ABI: a registration's (options JSON) decides
 * the shuffle of compressed writes, a batch's overrides it, and bad
 * options are refused with a message. */
static void element_sizes(void) {
  const char *zstd = ", \"tcp\": {\"compression\": \"zstd\"}";
  blob dc, dd, mc, md;
  mg_engine_t c = make_engine_with("c-elem-ini", zstd, &dc);
  mg_engine_t d = make_engine_with("c-elem-tgt", zstd, &dd);
  CHECK(mg_engine_register_remote(c, dd.bytes, dd.len) == MG_OK, "c registers d");
  CHECK(mg_engine_register_remote(d, dc.bytes, dc.len) == MG_OK, "d registers c");
  enum { M = (1 << 20) + 3 };
  uint8_t *src = malloc(M), *dst = calloc(1, M);
  for (size_t i = 0; i < M; i++) src[i] = (uint8_t)(i & 1 ? 0x3f + (i >> 12) % 3 : (i * 2654435761u) >> 13);
  CHECK(mg_register_memory_opts(c, (uint64_t)(uintptr_t)src, M, -1, MG_LOC_CPU, "{\"elem_size\": 1}", mc.bytes,
                                sizeof mc.bytes, &mc.len) == MG_OK,
        "register with elem_size 1");
  CHECK(mg_register_memory_opts(d, (uint64_t)(uintptr_t)dst, M, -1, MG_LOC_CPU, NULL, md.bytes, sizeof md.bytes, &md.len) ==
            MG_OK,
        "register with no options");
  uint64_t off = 0, size = M;
  mg_transfer_t x = {mc.bytes, mc.len, md.bytes, md.len, &off, &off, &size, 1, 1};
  mg_status_t st = 0;
  uint32_t code = 99;
  CHECK(mg_submit_opts(c, MG_OP_WRITE, &x, 1, "", &st) == MG_OK, "submit_opts with no options");
  CHECK(mg_status_wait(st, 10000, &code) == MG_OK && code == MG_OK, "write code %u", code);
  mg_status_release(st);
  CHECK(memcmp(src, dst, M) == 0, "bytes arrived intact");
  CHECK(shuffled(c) == 0, "a registration with elem_size 1 is not shuffled");
  memset(dst, 0, M);
  x.uid = 2;
  CHECK(mg_submit_opts(c, MG_OP_WRITE, &x, 1, "{\"elem_size\": 2}", &st) == MG_OK, "submit_opts elem_size 2");
  CHECK(mg_status_wait(st, 10000, &code) == MG_OK && code == MG_OK, "shuffled write code %u", code);
  mg_status_release(st);
  CHECK(memcmp(src, dst, M) == 0, "shuffled bytes arrived intact");
  CHECK(shuffled(c) == 1, "the batch's elem_size 2 shuffled it");

  uint8_t spare[64];
  size_t n = 0;
  CHECK(mg_register_memory_opts(c, (uint64_t)(uintptr_t)spare, sizeof spare, -1, MG_LOC_CPU, "{\"elem_size\": 17}",
                                mc.bytes, sizeof mc.bytes, &n) == MG_ERR_INVALID_ARGS &&
            strstr(mg_last_error(), "element size 17"),
        "elem_size 17 refused");
  CHECK(mg_register_memory_opts(c, (uint64_t)(uintptr_t)spare, sizeof spare, -1, MG_LOC_CPU, "{\"elem\": 2}", mc.bytes,
                                sizeof mc.bytes, &n) == MG_ERR_INVALID_ARGS &&
            strstr(mg_last_error(), "unknown field"),
        "unknown option refused");
  st = 0;
  CHECK(mg_submit_opts(c, MG_OP_WRITE, &x, 1, "{\"elem_size\": -1}", &st) == MG_ERR_INVALID_ARGS && st == 0 &&
            strstr(mg_last_error(), "mg_submit_opts"),
        "bad batch options fail the call and start nothing");
  CHECK(mg_engine_destroy(c) == MG_OK && mg_engine_destroy(d) == MG_OK, "destroy c and d");
  free(src);
  free(dst);
}

int main(void) {
  CHECK(mg_abi_version() == MG_ABI_VERSION, "abi version %u", mg_abi_version());

  blob da, db, ma, mb;
  mg_engine_t a = make_engine("c-prefill", &da);
  mg_engine_t b = make_engine("c-decode", &db);
  CHECK(mg_engine_register_remote(a, db.bytes, db.len) == MG_OK, "a registers b");
  CHECK(mg_engine_register_remote(b, da.bytes, da.len) == MG_OK, "b registers a");

  enum { N = 4 << 20, RANGES = 1000 };
  uint8_t *src = malloc(N), *dst = calloc(1, N);
  for (size_t i = 0; i < N; i++) src[i] = (uint8_t)(i * 131 + 7);
  CHECK(mg_register_memory(a, (uint64_t)(uintptr_t)src, N, -1, MG_LOC_CPU, ma.bytes, sizeof ma.bytes, &ma.len) == MG_OK,
        "register src");
  CHECK(mg_register_memory(b, (uint64_t)(uintptr_t)dst, N, -1, MG_LOC_CPU, mb.bytes, sizeof mb.bytes, &mb.len) == MG_OK,
        "register dst");

  /* A batch of 1000 ranges of 2 KiB, reversed order on the remote side. */
  static uint64_t lo[RANGES], ro[RANGES], sz[RANGES];
  for (int i = 0; i < RANGES; i++) {
    lo[i] = (uint64_t)i * 4096;
    ro[i] = (uint64_t)(RANGES - 1 - i) * 4096 + 100;
    sz[i] = 2048;
  }
  uint64_t uid = 0;
  CHECK(mg_allocate_uid(a, &uid) == MG_OK && uid > 0, "allocate uid");
  mg_transfer_t x = {ma.bytes, ma.len, mb.bytes, mb.len, lo, ro, sz, RANGES, uid};
  mg_status_t st = 0;
  CHECK(mg_submit(a, MG_OP_WRITE, &x, 1, &st) == MG_OK && st != 0, "submit");
  uint32_t code = 99;
  CHECK(mg_wait_all(&st, 1, 10000, &code) == MG_OK && code == MG_OK, "wait_all code %u", code);
  int intact = 1;
  for (int i = 0; i < RANGES && intact; i++) intact = memcmp(src + lo[i], dst + ro[i], sz[i]) == 0;
  CHECK(intact, "bytes arrived intact");
  int32_t found = 0;
  char msg[256];
  CHECK(mg_pop_inbound(b, "c-prefill", uid, &found, &code, msg, sizeof msg) == MG_OK && found == 1 && code == MG_OK,
        "inbound status found=%d code=%u", found, code);
  CHECK(mg_status_release(st) == MG_OK, "release status");
  CHECK(mg_status_release(st) == MG_ERR_INVALID_ARGS && strstr(mg_last_error(), "not valid"), "double release refused");

  /* A forged remote range: the status fails with a message, nothing written. */
  uint64_t blo = 0, bro = N - 10, bsz = 100;
  mg_transfer_t bad = {ma.bytes, ma.len, mb.bytes, mb.len, &blo, &bro, &bsz, 1, uid + 1000};
  CHECK(mg_submit(a, MG_OP_WRITE, &bad, 1, &st) == MG_OK, "submit bad");
  CHECK(mg_status_wait(st, 5000, &code) == MG_OK && code == MG_ERR_INVALID_ARGS, "bad range code %u", code);
  size_t mlen = 0;
  CHECK(mg_status_message(st, msg, sizeof msg, &mlen) == MG_OK && strstr(msg, "exceeds remote memory"),
        "bad range message: %.*s", (int)mlen, msg);
  /* wait_all skips a 0 handle (MORI-IO's None) and reports the failure,
   * waiting for every status or, with MG_WAIT_FAIL_FAST, not. */
  {
    mg_status_t some[3] = {0, st, 0};
    CHECK(mg_wait_all(some, 3, -1, &code) == MG_OK && code == MG_ERR_INVALID_ARGS, "wait_all skips 0: %u", code);
    CHECK(mg_wait_all_flags(some, 3, -1, MG_WAIT_FAIL_FAST, &code) == MG_OK && code == MG_ERR_INVALID_ARGS,
          "wait_all fail fast: %u", code);
    CHECK(mg_wait_all(some, 1, -1, &code) == MG_OK && code == MG_OK, "nothing but 0: success");
  }
  mg_status_release(st);

  /* Read back. */
  uint8_t *back = calloc(1, N);
  blob mback;
  CHECK(mg_register_memory(a, (uint64_t)(uintptr_t)back, N, -1, MG_LOC_CPU, mback.bytes, sizeof mback.bytes, &mback.len) ==
            MG_OK,
        "register back");
  mg_transfer_t rd = {mback.bytes, mback.len, mb.bytes, mb.len, ro, ro, sz, RANGES, uid + 1};
  CHECK(mg_submit(a, MG_OP_READ, &rd, 1, &st) == MG_OK, "submit read");
  CHECK(mg_status_wait(st, 10000, &code) == MG_OK && code == MG_OK, "read code %u", code);
  CHECK(memcmp(back + ro[0], dst + ro[0], sz[0]) == 0 && memcmp(back + ro[RANGES - 1], dst + ro[RANGES - 1], sz[0]) == 0,
        "read intact");
  mg_status_release(st);

  /* ABI error paths. */
  CHECK(mg_engine_create("{\"host\": \"x\"}", &st) == MG_ERR_INVALID_ARGS && strstr(mg_last_error(), "key"),
        "config without key refused");
  CHECK(mg_engine_create("not json", &st) == MG_ERR_INVALID_ARGS, "bad json refused");
  CHECK(mg_engine_desc(a, (uint8_t *)msg, 4, &mlen) == MG_ERR_INVALID_ARGS && mlen == da.len, "small buffer reports size");
  CHECK(mg_engine_register_remote(a, (const uint8_t *)"garbage", 7) == MG_ERR_INVALID_ARGS &&
            strstr(mg_last_error(), "malformed"),
        "garbage descriptor refused");
  CHECK(mg_allocate_uid(12345, &uid) == MG_ERR_INVALID_ARGS && strstr(mg_last_error(), "engine handle"),
        "bad engine handle refused");
  /* A block of uids: consecutive, after every uid handed out before, and
   * not handed out again. */
  uint64_t first = 0, next = 0;
  CHECK(mg_allocate_uids(a, 256, &first) == MG_OK && first > uid, "allocate a block of uids (first %llu after %llu)",
        (unsigned long long)first, (unsigned long long)uid);
  CHECK(mg_allocate_uid(a, &next) == MG_OK && next == first + 256, "the uid after a block of 256: %llu, want %llu",
        (unsigned long long)next, (unsigned long long)(first + 256));
  CHECK(mg_allocate_uids(a, 0, &first) == MG_ERR_INVALID_ARGS && strstr(mg_last_error(), "count 0"),
        "a block of 0 uids refused: %s", mg_last_error());
  CHECK(mg_allocate_uids(a, 1, NULL) == MG_ERR_INVALID_ARGS, "a NULL first refused");
  char json[4096];
  CHECK(mg_desc_to_json(mb.bytes, mb.len, json, sizeof json, &mlen) == MG_OK && strstr(json, "\"kind\":\"memory\""),
        "desc to json: %.*s", (int)mlen, json);

  /* A too-small buffer: registered once, and the retry with the same
   * arguments returns that registration. */
  enum { SMALL = 4096 };
  uint8_t *once = malloc(SMALL);
  blob mo;
  size_t need = 0;
  char stats[8192];
  CHECK(mg_register_memory(b, (uint64_t)(uintptr_t)once, SMALL, -1, MG_LOC_CPU, NULL, 0, &need) == MG_ERR_INVALID_ARGS &&
            need > 0 && strstr(mg_last_error(), "too small"),
        "small buffer reports the size needed (%zu)", need);
  CHECK(mg_register_memory(b, (uint64_t)(uintptr_t)once, SMALL, -1, MG_LOC_CPU, mo.bytes, need, &mo.len) == MG_OK &&
            mo.len == need,
        "retry returns the descriptor");
  CHECK(mg_engine_stats(b, stats, sizeof stats, &mlen) == MG_OK && strstr(stats, "\"regions\":2"),
        "registered once: %.*s", (int)mlen, stats);
  CHECK(mg_deregister_memory(b, mo.bytes, mo.len) == MG_OK, "deregister the once-registered memory");
  free(once);

  CHECK(mg_deregister_memory(b, mb.bytes, mb.len) == MG_OK, "deregister");
  CHECK(mg_deregister_memory(b, mb.bytes, mb.len) == MG_OK, "deregister again: nothing to do");
  CHECK(mg_engine_deregister_remote(b, (const uint8_t *)"x", 0) == MG_ERR_INVALID_ARGS, "empty descriptor refused");
  CHECK(mg_engine_remove_backend(b, MG_BACKEND_RDMA) == MG_OK, "remove a backend not running: nothing to do");
  CHECK(mg_engine_remove_backend(b, MG_BACKEND_TCP) == MG_OK, "remove the TCP backend");
  CHECK(mg_engine_stats(b, stats, sizeof stats, &mlen) == MG_OK && strstr(stats, "\"backend\":\"\""),
        "no backend after removal: %.*s", (int)mlen, stats);
  CHECK(mg_engine_create_backend(b, MG_BACKEND_TCP, NULL, NULL) == MG_OK, "create it again");
  CHECK(mg_engine_destroy(a) == MG_OK, "destroy a");
  CHECK(mg_engine_destroy(b) == MG_OK, "destroy b");
  CHECK(mg_engine_destroy(a) == MG_ERR_INVALID_ARGS, "double destroy refused");
  free(src);
  free(dst);
  free(back);
  element_sizes();
  printf("%d passed, %d failed\n", passed, failed);
  return failed ? 1 : 0;
}
