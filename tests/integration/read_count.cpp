// pasyn-test-read-count: reads from another process than the writer, for transaction_test.cpp.
//
// Usage: pasyn-test-read-count DATABASE KEY
// Opens DATABASE read-only with pasyn::connect and prints the number of rows of kv whose k is
// KEY. Exits 1 (with the error on stderr) if the read fails.
#include <cstdio>
#include <pasyn/pasyn.hpp>

int main(int argc, char** argv) {
  if (argc != 3) {
    std::fprintf(stderr, "usage: %s DATABASE KEY\n", argv[0]);
    return 2;
  }
  try {
    auto conn = pasyn::connect(argv[1], pasyn::OpenFlags::readonly());
    const auto row = conn.execute_fetchone("SELECT count(*) FROM kv WHERE k = ?", {argv[2]});
    if (!row) {
      std::fprintf(stderr, "read-count: count(*) returned no row\n");
      return 1;
    }
    std::printf("%lld\n", static_cast<long long>(std::get<std::int64_t>(row->at(0))));
    return 0;
  } catch (const pasyn::Error& e) {
    std::fprintf(stderr, "read-count: %s\n", e.what());
    return 1;
  }
}
