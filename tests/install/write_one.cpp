// A C++ program built against an installed mori-go (pkg-config or CMake):
// two engines in this process, one write of 64 KiB from one to the other,
// the bytes checked. Exit status 0 on success.
#include <mori_go.h>

#include <cstdint>
#include <cstdio>
#include <cstring>
#include <vector>

namespace {

struct Blob {
  uint8_t bytes[4096];
  size_t len = 0;
};

bool ok(int rc, const char *what) {
  if (rc == MG_OK) return true;
  std::fprintf(stderr, "%s: code %d: %s\n", what, rc, mg_last_error());
  return false;
}

bool make_engine(const char *key, mg_engine_t *e, Blob *desc) {
  char cfg[128];
  std::snprintf(cfg, sizeof cfg, "{\"key\": \"%s\", \"host\": \"127.0.0.1\"}", key);
  uint32_t actual = 0;
  return ok(mg_engine_create(cfg, e), "create engine") &&
         ok(mg_engine_create_backend(*e, MG_BACKEND_TCP, nullptr, &actual), "create backend") &&
         ok(mg_engine_desc(*e, desc->bytes, sizeof desc->bytes, &desc->len), "engine desc");
}

}  // namespace

int main() {
  if (mg_abi_version() != MG_ABI_VERSION) {
    std::fprintf(stderr, "ABI %u, header %u\n", mg_abi_version(), MG_ABI_VERSION);
    return 1;
  }
  mg_engine_t a = 0, b = 0;
  Blob da, db, ma, mb;
  if (!make_engine("cpp-prefill", &a, &da) || !make_engine("cpp-decode", &b, &db)) return 1;
  if (!ok(mg_engine_register_remote(a, db.bytes, db.len), "register b") ||
      !ok(mg_engine_register_remote(b, da.bytes, da.len), "register a"))
    return 1;

  const size_t n = 64 << 10;
  std::vector<uint8_t> src(n), dst(n, 0);
  for (size_t i = 0; i < n; i++) src[i] = static_cast<uint8_t>(i * 131 + 7);
  if (!ok(mg_register_memory(a, reinterpret_cast<uintptr_t>(src.data()), n, -1, MG_LOC_CPU, ma.bytes,
                             sizeof ma.bytes, &ma.len),
          "register src") ||
      !ok(mg_register_memory(b, reinterpret_cast<uintptr_t>(dst.data()), n, -1, MG_LOC_CPU, mb.bytes,
                             sizeof mb.bytes, &mb.len),
          "register dst"))
    return 1;

  uint64_t uid = 0, lo = 0, ro = 0, sz = n;
  if (!ok(mg_allocate_uid(a, &uid), "allocate uid")) return 1;
  mg_transfer_t x = {ma.bytes, ma.len, mb.bytes, mb.len, &lo, &ro, &sz, 1, uid};
  mg_status_t st = 0;
  uint32_t code = 0;
  if (!ok(mg_submit(a, MG_OP_WRITE, &x, 1, &st), "submit") ||
      !ok(mg_wait_all(&st, 1, 10000, &code), "wait") || !ok(static_cast<int>(code), "transfer"))
    return 1;
  mg_status_release(st);
  if (std::memcmp(src.data(), dst.data(), n) != 0) {
    std::fprintf(stderr, "bytes differ after the write\n");
    return 1;
  }
  mg_engine_destroy(a);
  mg_engine_destroy(b);
  std::printf("wrote %zu bytes between two engines with %s, checked\n", n, mg_version());
  return 0;
}
