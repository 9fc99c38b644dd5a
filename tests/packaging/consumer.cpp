// An application built against the installed pasyn package (scripts/package-test.sh), twice:
// as consumer-pkgconfig with  g++ -std=c++20 consumer.cpp $(pkg-config --cflags --libs
// pasyn-client), and as consumer-cmake with find_package(pasyn) (consumer-cmake/CMakeLists.txt).
//
//   consumer-NAME SOCKET DATABASE
// writes rows through the pasyn-writerd serving SOCKET, reads them back directly from DATABASE
// on a read-only connection, and exits non-zero unless it reads exactly what it wrote.
#include <cstdio>
#include <future>
#include <string>
#include <vector>

#include <pasyn/pasyn.hpp>

namespace {
// Passed by the build line: each build writes its own table.
constexpr const char* kName = PASYN_CONSUMER;
constexpr const char* kTable = PASYN_CONSUMER_TABLE;
constexpr int kRows = 5;
}  // namespace

int main(int argc, char** argv) {
  if (argc != 3) {
    std::fprintf(stderr, "usage: %s SOCKET DATABASE\n", argv[0]);
    return 2;
  }
  const std::string socket_path = argv[1], database = argv[2], table = kTable;
  try {
    pasyn::MultiplexedClient client(socket_path);
    client.executescript("CREATE TABLE IF NOT EXISTS " + table +
                         " (id INTEGER PRIMARY KEY, name TEXT NOT NULL);"
                         "DELETE FROM " +
                         table);
    std::vector<std::future<std::int64_t>> acks;  // all in flight at once
    for (int i = 1; i <= kRows; ++i) {
      acks.push_back(client.execute_async("INSERT INTO " + table + " (id, name) VALUES (?, ?)",
                                          {std::int64_t{i}, "row " + std::to_string(i)}));
    }
    for (auto& ack : acks) ack.get();

    auto reader = pasyn::connect(database, pasyn::OpenFlags::readonly());
    const auto rows = reader.execute_fetchall("SELECT id, name FROM " + table + " ORDER BY id");
    reader.close();
    int mismatches = rows.size() == kRows ? 0 : 1;
    for (std::size_t i = 0; i < rows.size(); ++i) {
      const auto want_id = static_cast<std::int64_t>(i + 1);
      const auto want_name = "row " + std::to_string(want_id);
      if (rows[i] != pasyn::Row{want_id, want_name}) ++mismatches;
    }
    std::printf("%s: wrote %d rows through %s, read %zu back from %s (pasyn %s): %s\n", kName,
                kRows, socket_path.c_str(), rows.size(), database.c_str(), PASYN_VERSION_STRING,
                mismatches ? "MISMATCH" : "ok");
    return mismatches ? 1 : 0;
  } catch (const pasyn::Error& e) {
    std::fprintf(stderr, "%s: %s\n", kName, e.what());
    return 1;
  }
}
