/* cbench: the C side of bench/run.py. One program, five roles:
 *
 *   cbench memcpy   SRC DST0[,DST1...]  in-process memcpy of the same ranges (the bound)
 *   cbench raw-init  SRC CONNS          initiator of the raw-socket baseline
 *   cbench raw-target DST               target of the raw-socket baseline
 *   cbench mg-init  SRC STREAMS         mori-go through the C ABI (mg_submit, mg_wait_all)
 *   cbench mg-target DST STREAMS        mori-go target through the C ABI
 *
 * Every role speaks the line protocol of bench/worker.py on stdin/stdout
 * (stdout is moved to a private descriptor and fd 1 pointed at stderr, so
 * nothing a library prints can corrupt it):
 *
 *   targets print   "info TOKEN" once ready, then answer
 *                   "clear LAYOUT PEER" / "check LAYOUT PEER" / "quit"
 *   initiators take "connect N TOKEN..." / "layout PATH" / "run N [GAP_US]" / "quit";
 *                   "run" answers "ok SECONDS..." (one per batch) or "err MSG";
 *                   GAP_US: microseconds spun before each batch, outside its time
 *                   (a caller's own work between transfers).
 *
 * A layout file (written by run.py) is "MGBL", u32 peers, then per peer a u64
 * count and count triples (u64 local offset, remote offset, size). Sources
 * hold the pattern word[j] = j*K+1 so a target can check any range it got.
 *
 * The raw baseline is the ideal plain-socket transfer: CONNS TCP connections
 * per target, each batch cut into up to CONNS equal byte slices of at least
 * 64 KiB (a smaller batch goes whole on one connection, sent by the calling
 * thread itself); the sender writes
 * its slice with writev straight from the source ranges, the receiver knows
 * the layout in advance (sent once, untimed) and readv's into the
 * destination ranges, then acknowledges with one byte. No headers, no
 * descriptors, no checks: what a transfer engine cannot beat on TCP.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <limits.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#include "mori_go.h"

#define K 0x9E3779B97F4A7C15ull
#define MAXPEERS 16
#define MAXCONN 16
#define MINSLICE (64u << 10)

static FILE *out;

static void reply(const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  vfprintf(out, fmt, ap);
  va_end(ap);
  fputc('\n', out);
  fflush(out);
}

static void die(const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  fprintf(stderr, "cbench: ");
  vfprintf(stderr, fmt, ap);
  va_end(ap);
  fputc('\n', stderr);
  exit(1);
}

static int gap; /* "run N GAP_US" */

static double now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec + ts.tv_nsec * 1e-9;
}

/* spin_us: the caller's own work between two batches, spun (not slept, so
 * that the core stays as busy as a caller's would) before a batch's clock
 * starts ("run N GAP_US"). */
static void spin_us(int us) {
  if (us <= 0) return;
  double end = now() + us * 1e-6;
  while (now() < end) {
  }
}

static uint8_t *alloc_mem(size_t n) {
  void *p = mmap(NULL, n, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (p == MAP_FAILED) die("mmap %zu: %s", n, strerror(errno));
  return p;
}

static uint8_t *alloc_src(size_t n) {
  uint8_t *p = alloc_mem(n);
  uint64_t *w = (uint64_t *)p;
  for (size_t j = 0; j < n / 8; j++) w[j] = j * K + 1;
  return p;
}

static uint8_t *alloc_dst(size_t n) {
  uint8_t *p = alloc_mem(n);
  memset(p, 0, n); /* touch every page now, not during the first batch */
  return p;
}

/* ---- layouts ---- */

typedef struct {
  uint64_t lo, ro, sz;
} range_t;

typedef struct {
  int npeers;
  size_t count[MAXPEERS];
  range_t *r[MAXPEERS];
} layout_t;

static void layout_free(layout_t *l) {
  for (int p = 0; p < l->npeers; p++) free(l->r[p]);
  memset(l, 0, sizeof *l);
}

static int layout_load(const char *path, layout_t *l) {
  memset(l, 0, sizeof *l);
  FILE *f = fopen(path, "rb");
  if (!f) return -1;
  char magic[4];
  uint32_t np;
  if (fread(magic, 1, 4, f) != 4 || memcmp(magic, "MGBL", 4) || fread(&np, 4, 1, f) != 1 || np > MAXPEERS) {
    fclose(f);
    return -1;
  }
  l->npeers = (int)np;
  for (uint32_t p = 0; p < np; p++) {
    uint64_t c;
    if (fread(&c, 8, 1, f) != 1) goto bad;
    l->count[p] = c;
    l->r[p] = malloc((c ? c : 1) * sizeof(range_t));
    if (fread(l->r[p], sizeof(range_t), c, f) != c) goto bad;
  }
  fclose(f);
  return 0;
bad:
  fclose(f);
  layout_free(l);
  return -1;
}

/* Zero the destination extent of one peer's ranges. */
static void do_clear(uint8_t *dst, size_t dsize, const char *path, int peer) {
  layout_t l;
  if (layout_load(path, &l) || peer >= l.npeers) {
    reply("err bad layout %s", path);
    return;
  }
  uint64_t end = 0;
  for (size_t i = 0; i < l.count[peer]; i++) {
    uint64_t e = l.r[peer][i].ro + l.r[peer][i].sz;
    if (e > end) end = e;
  }
  if (end > dsize) end = dsize;
  memset(dst, 0, end);
  layout_free(&l);
  reply("ok");
}

/* Check a sample of one peer's ranges (first, last and evenly spaced ones). */
static int check_range(const uint8_t *dst, size_t dsize, range_t r, char *msg, size_t cap) {
  if (r.ro + r.sz > dsize) {
    snprintf(msg, cap, "range beyond buffer");
    return -1;
  }
  const uint64_t *w = (const uint64_t *)(dst + r.ro);
  uint64_t base = r.lo / 8;
  for (uint64_t t = 0; t < r.sz / 8; t++)
    if (w[t] != (base + t) * K + 1) {
      snprintf(msg, cap, "range lo=%llu ro=%llu sz=%llu wrong at byte %llu", (unsigned long long)r.lo,
               (unsigned long long)r.ro, (unsigned long long)r.sz, (unsigned long long)(8 * t));
      return -1;
    }
  return 0;
}

static void do_check(const uint8_t *dst, size_t dsize, const char *path, int peer) {
  layout_t l;
  if (layout_load(path, &l) || peer >= l.npeers) {
    reply("err bad layout %s", path);
    return;
  }
  size_t n = l.count[peer];
  char msg[256];
  for (size_t k = 0; k < 8 && n; k++) {
    size_t i = k == 7 ? n - 1 : k * n / 8;
    if (check_range(dst, dsize, l.r[peer][i], msg, sizeof msg)) {
      reply("err %s", msg);
      layout_free(&l);
      return;
    }
  }
  layout_free(&l);
  reply("ok");
}

/* Target command loop shared by raw-target and mg-target. */
static void target_loop(uint8_t *dst, size_t dsize) {
  char line[4096], path[4000];
  int peer;
  while (fgets(line, sizeof line, stdin)) {
    if (sscanf(line, "clear %3999s %d", path, &peer) == 2)
      do_clear(dst, dsize, path, peer);
    else if (sscanf(line, "check %3999s %d", path, &peer) == 2)
      do_check(dst, dsize, path, peer);
    else if (!strncmp(line, "quit", 4))
      break;
    else
      reply("err unknown command");
  }
}

static void report_lat(const double *lat, int n) {
  fprintf(out, "ok");
  for (int i = 0; i < n; i++) fprintf(out, " %.9f", lat[i]);
  fputc('\n', out);
  fflush(out);
}

/* ---- memcpy bound ---- */

static int role_memcpy(size_t ssize, char *dsizes) {
  uint8_t *src = alloc_src(ssize), *dst[MAXPEERS];
  size_t dsz[MAXPEERS];
  int nd = 0;
  for (char *t = strtok(dsizes, ","); t && nd < MAXPEERS; t = strtok(NULL, ",")) {
    dsz[nd] = strtoull(t, NULL, 10);
    dst[nd] = alloc_dst(dsz[nd]);
    nd++;
  }
  layout_t l = {0};
  char line[4096], path[4000];
  int n;
  while (fgets(line, sizeof line, stdin)) {
    if (!strncmp(line, "connect", 7)) {
      reply("ok");
    } else if (sscanf(line, "layout %3999s", path) == 1) {
      layout_free(&l);
      if (layout_load(path, &l) || l.npeers > nd)
        reply("err bad layout");
      else
        reply("ok");
    } else if ((gap = 0, sscanf(line, "run %d %d", &n, &gap)) >= 1) {
      double *lat = malloc(n * sizeof(double));
      for (int it = 0; it < n; it++) {
        spin_us(gap);
        double t0 = now();
        for (int p = 0; p < l.npeers; p++)
          for (size_t i = 0; i < l.count[p]; i++) memcpy(dst[p] + l.r[p][i].ro, src + l.r[p][i].lo, l.r[p][i].sz);
        lat[it] = now() - t0;
      }
      char msg[256];
      int bad = 0;
      for (int p = 0; p < l.npeers && !bad; p++)
        if (l.count[p] && check_range(dst[p], dsz[p], l.r[p][l.count[p] - 1], msg, sizeof msg)) bad = 1;
      if (bad)
        reply("err %s", msg);
      else
        report_lat(lat, n);
      free(lat);
    } else if (!strncmp(line, "quit", 4)) {
      break;
    } else {
      reply("err unknown command");
    }
  }
  return 0;
}

/* ---- raw sockets ---- */

static int writev_all(int fd, struct iovec *iov, int cnt) {
  while (cnt > 0 && iov->iov_len == 0) iov++, cnt--;
  while (cnt > 0) {
    int c = cnt > IOV_MAX ? IOV_MAX : cnt;
    ssize_t n = writev(fd, iov, c);
    if (n < 0) {
      if (errno == EINTR) continue;
      return -1;
    }
    while (n > 0 && cnt > 0) {
      if ((size_t)n >= iov->iov_len) {
        n -= iov->iov_len;
        iov++;
        cnt--;
      } else {
        iov->iov_base = (char *)iov->iov_base + n;
        iov->iov_len -= n;
        n = 0;
      }
    }
    while (cnt > 0 && iov->iov_len == 0) iov++, cnt--;
  }
  return 0;
}

static int readv_all(int fd, struct iovec *iov, int cnt) {
  while (cnt > 0 && iov->iov_len == 0) iov++, cnt--;
  while (cnt > 0) {
    int c = cnt > IOV_MAX ? IOV_MAX : cnt;
    ssize_t n = readv(fd, iov, c);
    if (n < 0) {
      if (errno == EINTR) continue;
      return -1;
    }
    if (n == 0) return -1;
    while (n > 0 && cnt > 0) {
      if ((size_t)n >= iov->iov_len) {
        n -= iov->iov_len;
        iov++;
        cnt--;
      } else {
        iov->iov_base = (char *)iov->iov_base + n;
        iov->iov_len -= n;
        n = 0;
      }
    }
    while (cnt > 0 && iov->iov_len == 0) iov++, cnt--;
  }
  return 0;
}

static int read_full(int fd, void *buf, size_t n) {
  struct iovec v = {buf, n};
  return readv_all(fd, &v, 1);
}

static int write_full(int fd, const void *buf, size_t n) {
  struct iovec v = {(void *)buf, n};
  return writev_all(fd, &v, 1);
}

/* Target: one thread per accepted connection. */
static uint8_t *raw_dst;
static size_t raw_dsize;

static void *raw_conn(void *arg) {
  int fd = (int)(intptr_t)arg;
  struct iovec *tmpl = NULL, *iov = NULL;
  uint64_t n = 0;
  for (;;) {
    uint8_t cmd;
    if (read_full(fd, &cmd, 1)) break;
    if (cmd == 'L') {
      if (read_full(fd, &n, 8)) break;
      uint64_t *pairs = malloc((n ? n : 1) * 16);
      if (read_full(fd, pairs, n * 16)) break;
      free(tmpl);
      free(iov);
      tmpl = malloc((n + 1) * sizeof *tmpl);
      iov = malloc((n + 1) * sizeof *iov);
      for (uint64_t i = 0; i < n; i++) {
        if (pairs[2 * i] + pairs[2 * i + 1] > raw_dsize) {
          fprintf(stderr, "cbench raw-target: range beyond buffer\n");
          exit(1);
        }
        tmpl[i].iov_base = raw_dst + pairs[2 * i];
        tmpl[i].iov_len = pairs[2 * i + 1];
      }
      free(pairs);
    } else if (cmd == 'B') {
      memcpy(iov, tmpl, n * sizeof *iov);
      if (readv_all(fd, iov, (int)n)) break;
      uint8_t ack = 1;
      if (write_full(fd, &ack, 1)) break;
    } else {
      break;
    }
  }
  close(fd);
  return NULL;
}

static void *raw_accept(void *arg) {
  int ln = (int)(intptr_t)arg;
  for (;;) {
    int fd = accept(ln, NULL, NULL);
    if (fd < 0) {
      if (errno == EINTR) continue;
      return NULL;
    }
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    pthread_t t;
    pthread_create(&t, NULL, raw_conn, (void *)(intptr_t)fd);
    pthread_detach(t);
  }
}

static int role_raw_target(size_t dsize) {
  raw_dst = alloc_dst(dsize);
  raw_dsize = dsize;
  int ln = socket(AF_INET, SOCK_STREAM, 0);
  struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
  socklen_t al = sizeof a;
  if (bind(ln, (struct sockaddr *)&a, sizeof a) || listen(ln, 128) || getsockname(ln, (struct sockaddr *)&a, &al))
    die("listen: %s", strerror(errno));
  pthread_t t;
  pthread_create(&t, NULL, raw_accept, (void *)(intptr_t)ln);
  pthread_detach(t);
  reply("info 127.0.0.1:%d", ntohs(a.sin_port));
  target_loop(raw_dst, raw_dsize);
  return 0;
}

/* Initiator: one thread per (target, connection); barriers start and end a batch. */
typedef struct {
  int fd;
  struct iovec *tmpl, *iov;
  int n; /* pieces; tmpl[0] is the 'B' byte */
  int err;
} rconn_t;

static uint8_t *raw_src;
static rconn_t rconns[MAXPEERS * MAXCONN];
static int nrconn, rconn_active;
static pthread_barrier_t bstart, bend;
static volatile int rquit;
static const uint8_t Bbyte = 'B';

static void *raw_sender(void *arg) {
  rconn_t *c = arg;
  for (;;) {
    pthread_barrier_wait(&bstart);
    if (rquit) return NULL;
    if (c->n > 0) {
      memcpy(c->iov, c->tmpl, (c->n + 1) * sizeof *c->iov);
      uint8_t ack;
      if (writev_all(c->fd, c->iov, c->n + 1) || read_full(c->fd, &ack, 1)) c->err = 1;
    }
    pthread_barrier_wait(&bend);
  }
}

static int connect_to(const char *hostport) {
  char host[256];
  int port;
  if (sscanf(hostport, "%255[^:]:%d", host, &port) != 2) return -1;
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(port)};
  inet_pton(AF_INET, host, &a.sin_addr);
  if (connect(fd, (struct sockaddr *)&a, sizeof a)) return -1;
  int one = 1;
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  return fd;
}

/* Cut peer p's ranges into conns equal byte slices; install them on
 * rconns[p*conns .. p*conns+conns-1] and tell the target. */
static int raw_layout(const layout_t *l, int conns) {
  for (int i = 0; i < nrconn; i++) {
    free(rconns[i].tmpl);
    free(rconns[i].iov);
    rconns[i].tmpl = rconns[i].iov = NULL;
    rconns[i].n = 0;
  }
  rconn_active = l->npeers * conns;
  if (rconn_active > nrconn) return -1;
  for (int p = 0; p < l->npeers; p++) {
    uint64_t total = 0;
    for (size_t i = 0; i < l->count[p]; i++) total += l->r[p][i].sz;
    /* Slices of at least MINSLICE bytes: a small batch goes whole on one
     * connection (splitting 4 KiB four ways would only add wake-ups). */
    uint64_t ns = total / MINSLICE;
    int nsl = ns < 1 ? 1 : ns > (uint64_t)conns ? conns : (int)ns;
    size_t ri = 0;
    uint64_t roff = 0; /* bytes of range ri already given out */
    for (int c = 0; c < conns; c++) {
      rconn_t *rc = &rconns[p * conns + c];
      uint64_t want = c < nsl ? total / nsl : 0;
      want &= ~7ull; /* keep slices 8-byte aligned... */
      if (c == nsl - 1) want = UINT64_MAX; /* ...and give the rest to the last */
      size_t cap = 16;
      rc->tmpl = malloc((cap + 1) * sizeof(struct iovec));
      uint64_t *pairs = malloc(cap * 16);
      int n = 0;
      while (want > 0 && ri < l->count[p]) {
        range_t r = l->r[p][ri];
        uint64_t take = r.sz - roff < want ? r.sz - roff : want;
        if ((size_t)n == cap) {
          cap *= 2;
          rc->tmpl = realloc(rc->tmpl, (cap + 1) * sizeof(struct iovec));
          pairs = realloc(pairs, cap * 16);
        }
        rc->tmpl[n + 1].iov_base = raw_src + r.lo + roff;
        rc->tmpl[n + 1].iov_len = take;
        pairs[2 * n] = r.ro + roff;
        pairs[2 * n + 1] = take;
        n++;
        roff += take;
        if (want != UINT64_MAX) want -= take;
        if (roff == r.sz) ri++, roff = 0;
      }
      rc->tmpl[0].iov_base = (void *)&Bbyte;
      rc->tmpl[0].iov_len = 1;
      rc->n = n;
      rc->iov = malloc((n + 1) * sizeof(struct iovec));
      uint8_t L = 'L';
      uint64_t nn = n;
      if (write_full(rc->fd, &L, 1) || write_full(rc->fd, &nn, 8) || write_full(rc->fd, pairs, n * 16)) {
        free(pairs);
        return -1;
      }
      free(pairs);
    }
  }
  return 0;
}

static int role_raw_init(size_t ssize, int conns) {
  raw_src = alloc_src(ssize);
  layout_t l = {0};
  char line[1 << 16], path[4000];
  int n;
  int started = 0;
  while (fgets(line, sizeof line, stdin)) {
    if (!strncmp(line, "connect ", 8)) {
      int nt = 0, off = 0;
      sscanf(line + 8, "%d%n", &nt, &off);
      char *s = line + 8 + off;
      nrconn = 0;
      for (int t = 0; t < nt; t++) {
        char tok[256];
        int used;
        if (sscanf(s, "%255s%n", tok, &used) != 1) break;
        s += used;
        for (int c = 0; c < conns; c++) {
          int fd = connect_to(tok);
          if (fd < 0) die("connect %s: %s", tok, strerror(errno));
          rconns[nrconn++].fd = fd;
        }
      }
      pthread_barrier_init(&bstart, NULL, nrconn + 1);
      pthread_barrier_init(&bend, NULL, nrconn + 1);
      for (int i = 0; i < nrconn; i++) {
        pthread_t t;
        pthread_create(&t, NULL, raw_sender, &rconns[i]);
        pthread_detach(t);
      }
      started = 1;
      reply("ok");
    } else if (sscanf(line, "layout %3999s", path) == 1) {
      layout_free(&l);
      if (!started || layout_load(path, &l) || raw_layout(&l, conns))
        reply("err bad layout");
      else
        reply("ok");
    } else if ((gap = 0, sscanf(line, "run %d %d", &n, &gap)) >= 1) {
      double *lat = malloc(n * sizeof(double));
      int err = 0;
      /* One busy connection: the calling thread sends itself (no wake-ups). */
      int busy = 0, only = -1;
      for (int i = 0; i < nrconn; i++)
        if (rconns[i].n > 0) busy++, only = i;
      for (int it = 0; it < n && !err; it++) {
        spin_us(gap);
        double t0 = now();
        if (busy == 1) {
          rconn_t *c = &rconns[only];
          memcpy(c->iov, c->tmpl, (c->n + 1) * sizeof *c->iov);
          uint8_t ack;
          if (writev_all(c->fd, c->iov, c->n + 1) || read_full(c->fd, &ack, 1)) c->err = 1;
        } else {
          pthread_barrier_wait(&bstart);
          pthread_barrier_wait(&bend);
        }
        lat[it] = now() - t0;
        for (int i = 0; i < nrconn; i++) err |= rconns[i].err;
      }
      if (err)
        reply("err socket error");
      else
        report_lat(lat, n);
      free(lat);
    } else if (!strncmp(line, "quit", 4)) {
      break;
    } else {
      reply("err unknown command");
    }
  }
  if (started) {
    rquit = 1;
    pthread_barrier_wait(&bstart);
  }
  return 0;
}

/* ---- mori-go through the C ABI ---- */

static void hex(const uint8_t *b, size_t n, char *outp) {
  static const char *d = "0123456789abcdef";
  for (size_t i = 0; i < n; i++) outp[2 * i] = d[b[i] >> 4], outp[2 * i + 1] = d[b[i] & 15];
  outp[2 * n] = 0;
}

static size_t unhex(const char *s, uint8_t *b, size_t cap) {
  size_t n = 0;
  while (s[0] && s[1] && n < cap) {
    unsigned v;
    if (sscanf(s, "%2x", &v) != 1) break;
    b[n++] = (uint8_t)v;
    s += 2;
  }
  return n;
}

#define MGDIE(what) die("%s: %s", what, mg_last_error())

static mg_engine_t mg_new(const char *role, int streams) {
  char cfg[256];
  if (streams > 0)
    snprintf(cfg, sizeof cfg, "{\"key\": \"cbench-%s-%d\", \"host\": \"127.0.0.1\", \"tcp\": {\"streams\": %d}}", role,
             (int)getpid(), streams);
  else
    snprintf(cfg, sizeof cfg, "{\"key\": \"cbench-%s-%d\", \"host\": \"127.0.0.1\"}", role, (int)getpid());
  mg_engine_t e;
  uint32_t actual;
  if (mg_engine_create(cfg, &e)) MGDIE("mg_engine_create");
  if (mg_engine_create_backend(e, MG_BACKEND_TCP, NULL, &actual)) MGDIE("mg_engine_create_backend");
  return e;
}

static int role_mg_target(size_t dsize, int streams) {
  uint8_t *dst = alloc_dst(dsize);
  mg_engine_t e = mg_new("target", streams);
  uint8_t ed[4096], md[4096];
  size_t el, ml;
  if (mg_engine_desc(e, ed, sizeof ed, &el)) MGDIE("mg_engine_desc");
  if (mg_register_memory(e, (uint64_t)(uintptr_t)dst, dsize, -1, MG_LOC_CPU, md, sizeof md, &ml))
    MGDIE("mg_register_memory");
  char *h = malloc(2 * (el + ml) + 8);
  hex(ed, el, h);
  strcat(h, ",");
  hex(md, ml, h + strlen(h));
  reply("info %s", h);
  free(h);
  target_loop(dst, dsize);
  mg_engine_destroy(e);
  return 0;
}

static int role_mg_init(size_t ssize, int streams) {
  uint8_t *src = alloc_src(ssize);
  mg_engine_t e = mg_new("init", streams);
  uint8_t lmd[4096];
  size_t lml;
  if (mg_register_memory(e, (uint64_t)(uintptr_t)src, ssize, -1, MG_LOC_CPU, lmd, sizeof lmd, &lml))
    MGDIE("mg_register_memory");
  uint8_t *rmd[MAXPEERS];
  size_t rml[MAXPEERS];
  int nt = 0;
  layout_t l = {0};
  /* per peer: separate offset/size arrays, as the ABI takes them */
  uint64_t *lo[MAXPEERS] = {0}, *ro[MAXPEERS] = {0}, *sz[MAXPEERS] = {0};
  static char line[1 << 20];
  char path[4000];
  int n;
  while (fgets(line, sizeof line, stdin)) {
    if (!strncmp(line, "connect ", 8)) {
      int off = 0;
      sscanf(line + 8, "%d%n", &nt, &off);
      char *s = line + 8 + off;
      for (int t = 0; t < nt; t++) {
        while (*s == ' ') s++;
        char *comma = strchr(s, ',');
        char *end = strpbrk(s, " \n");
        if (!comma || !end) die("connect: bad token");
        *comma = 0;
        *end = 0;
        uint8_t ed[4096];
        size_t el = unhex(s, ed, sizeof ed);
        rmd[t] = malloc(4096);
        rml[t] = unhex(comma + 1, rmd[t], 4096);
        if (mg_engine_register_remote(e, ed, el)) MGDIE("mg_engine_register_remote");
        s = end + 1;
      }
      /* Registration connects in the background: wait for every target (one
       * byte each; targets clear their buffer before each workload) before
       * answering, since the harness may stop this process right after. */
      for (int t = 0; t < nt; t++) {
        uint32_t code = 1;
        for (int attempt = 0; attempt < 20 && code != MG_OK; attempt++) {
          uint64_t uid, zero = 0, one = 1;
          mg_allocate_uid(e, &uid);
          mg_transfer_t x = {lmd, lml, rmd[t], rml[t], &zero, &zero, &one, 1, uid};
          mg_status_t st;
          if (mg_submit(e, MG_OP_WRITE, &x, 1, &st)) MGDIE("mg_submit");
          mg_status_wait(st, 30000, &code);
          mg_status_release(st);
          if (code != MG_OK) usleep(250000);
        }
        if (code != MG_OK) die("no connection to target %d (code %u)", t, code);
      }
      reply("ok");
    } else if (sscanf(line, "layout %3999s", path) == 1) {
      layout_free(&l);
      if (layout_load(path, &l) || l.npeers > nt) {
        reply("err bad layout");
        continue;
      }
      for (int p = 0; p < l.npeers; p++) {
        free(lo[p]);
        free(ro[p]);
        free(sz[p]);
        size_t c = l.count[p] ? l.count[p] : 1;
        lo[p] = malloc(c * 8);
        ro[p] = malloc(c * 8);
        sz[p] = malloc(c * 8);
        for (size_t i = 0; i < l.count[p]; i++) lo[p][i] = l.r[p][i].lo, ro[p][i] = l.r[p][i].ro, sz[p][i] = l.r[p][i].sz;
      }
      reply("ok");
    } else if ((gap = 0, sscanf(line, "run %d %d", &n, &gap)) >= 1) {
      double *lat = malloc(n * sizeof(double));
      char err[512] = "";
      for (int it = 0; it < n && !err[0]; it++) {
        mg_transfer_t x[MAXPEERS];
        mg_status_t st[MAXPEERS];
        spin_us(gap);
        double t0 = now();
        for (int p = 0; p < l.npeers; p++) {
          uint64_t uid;
          mg_allocate_uid(e, &uid);
          x[p] = (mg_transfer_t){lmd, lml, rmd[p], rml[p], lo[p], ro[p], sz[p], l.count[p], uid};
        }
        if (mg_submit(e, MG_OP_WRITE, x, l.npeers, st)) {
          snprintf(err, sizeof err, "mg_submit: %s", mg_last_error());
          break;
        }
        uint32_t code;
        mg_wait_all(st, l.npeers, 120000, &code);
        lat[it] = now() - t0;
        if (code != MG_OK) {
          char m[256];
          size_t ml;
          for (int p = 0; p < l.npeers; p++) {
            uint32_t c;
            mg_status_code(st[p], &c);
            if (c != MG_OK) {
              m[0] = 0;
              mg_status_message(st[p], m, sizeof m, &ml);
              snprintf(err, sizeof err, "transfer code %u: %s", c, m);
              break;
            }
          }
          if (!err[0]) snprintf(err, sizeof err, "wait_all code %u", code);
        }
        for (int p = 0; p < l.npeers; p++) mg_status_release(st[p]);
      }
      if (err[0])
        reply("err %s", err);
      else
        report_lat(lat, n);
      free(lat);
    } else if (!strncmp(line, "quit", 4)) {
      break;
    } else {
      reply("err unknown command");
    }
  }
  mg_engine_destroy(e);
  return 0;
}

int main(int argc, char **argv) {
  /* Private protocol channel; fd 1 goes to stderr for anything libraries print. */
  signal(SIGPIPE, SIG_IGN); /* a dead peer is an error to report, not a reason to die */
  int pfd = dup(1);
  dup2(2, 1);
  out = fdopen(pfd, "w");
  if (argc < 3) die("usage: cbench ROLE ARGS (see the source)");
  const char *role = argv[1];
  size_t size = strtoull(argv[2], NULL, 10);
  if (!strcmp(role, "memcpy") && argc == 4) return role_memcpy(size, argv[3]);
  if (!strcmp(role, "raw-init") && argc == 4) return role_raw_init(size, atoi(argv[3]));
  if (!strcmp(role, "raw-target")) return role_raw_target(size);
  if (!strcmp(role, "mg-init") && argc == 4) return role_mg_init(size, atoi(argv[3]));
  if (!strcmp(role, "mg-target") && argc == 4) return role_mg_target(size, atoi(argv[3]));
  die("bad arguments for %s", role);
  return 2;
}
