#define _POSIX_C_SOURCE 199309L
/* Cost of submitting a batch of ranges through the C ABI: two engines on
 * loopback, batches of 10 000 ranges of 1 KiB (scattered, so nothing
 * coalesces). Prints the time inside mg_submit per range (ABI crossing,
 * descriptor lookup, range copy and checks, framing) and the whole transfer
 * per range. No thresholds: it reports. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "mori_go.h"

static double now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec + ts.tv_nsec * 1e-9;
}

static int cmp(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return (x > y) - (x < y);
}

#define DIE(...)                                                  \
  do {                                                            \
    fprintf(stderr, __VA_ARGS__);                                 \
    fprintf(stderr, ": %s\n", mg_last_error());                   \
    exit(1);                                                      \
  } while (0)

int main(int argc, char **argv) {
  int n = argc > 1 ? atoi(argv[1]) : 10000, iters = argc > 2 ? atoi(argv[2]) : 30;
  const uint64_t size = 1024;
  mg_engine_t a, b;
  uint32_t actual;
  uint8_t da[1024], db[1024], ma[1024], mb[1024];
  size_t la, lb, lma, lmb;
  if (mg_engine_create("{\"key\": \"bench-a\"}", &a) || mg_engine_create("{\"key\": \"bench-b\"}", &b)) DIE("create");
  if (mg_engine_create_backend(a, MG_BACKEND_TCP, NULL, &actual) || mg_engine_create_backend(b, MG_BACKEND_TCP, NULL, &actual))
    DIE("backend");
  mg_engine_desc(a, da, sizeof da, &la);
  mg_engine_desc(b, db, sizeof db, &lb);
  if (mg_engine_register_remote(a, db, lb)) DIE("register remote");
  uint8_t *src = calloc(n, size), *dst = calloc(2 * (size_t)n, size);
  if (mg_register_memory(a, (uint64_t)(uintptr_t)src, n * size, -1, MG_LOC_CPU, ma, sizeof ma, &lma)) DIE("reg");
  if (mg_register_memory(b, (uint64_t)(uintptr_t)dst, 2 * n * size, -1, MG_LOC_CPU, mb, sizeof mb, &lmb)) DIE("reg");
  uint64_t *lo = malloc(n * 8), *ro = malloc(n * 8), *sz = malloc(n * 8);
  for (int i = 0; i < n; i++) {
    lo[i] = i * size;
    ro[i] = 2 * i * size;
    sz[i] = size;
  }
  double *sub = malloc(iters * sizeof(double)), *all = malloc(iters * sizeof(double));
  for (int it = 0; it < iters; it++) {
    uint64_t uid;
    mg_allocate_uid(a, &uid);
    mg_transfer_t x = {ma, lma, mb, lmb, lo, ro, sz, (size_t)n, uid};
    mg_status_t st;
    uint32_t code;
    double t0 = now();
    if (mg_submit(a, MG_OP_WRITE, &x, 1, &st)) DIE("submit");
    double t1 = now();
    mg_status_wait(st, 60000, &code);
    double t2 = now();
    if (code != MG_OK) DIE("transfer code %u", code);
    mg_status_release(st);
    sub[it] = (t1 - t0) / n * 1e9;
    all[it] = (t2 - t0) / n * 1e9;
  }
  qsort(sub, iters, sizeof(double), cmp);
  qsort(all, iters, sizeof(double), cmp);
  printf("C ABI, batches of %d ranges of %llu B, %d batches (median):\n", n, (unsigned long long)size, iters);
  printf("  inside mg_submit: %.1f ns per range (ABI crossing, checks, framing)\n", sub[iters / 2]);
  printf("  whole transfer:   %.1f ns per range = %.0f ranges/s\n", all[iters / 2], 1e9 / all[iters / 2]);
  mg_engine_destroy(a);
  mg_engine_destroy(b);
  return 0;
}
