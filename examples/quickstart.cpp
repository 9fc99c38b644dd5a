// The seed's quick start in C++: writes through a pasyn writer, reads on a direct connection.
//
//   pasyn-quickstart DATABASE           starts an in-process writer server (as in the seed)
//   pasyn-quickstart DATABASE SOCKET    writes through a running pasyn-writerd instead
#include <cstdio>
#include <optional>
#include <pasyn/pasyn.hpp>

namespace {

void print_value(const pasyn::Value& v) {
  switch (pasyn::type_of(v)) {
    case pasyn::ValueType::kNull:
      std::printf("NULL");
      break;
    case pasyn::ValueType::kInteger:
      std::printf("%lld", static_cast<long long>(std::get<std::int64_t>(v)));
      break;
    case pasyn::ValueType::kReal:
      std::printf("%g", std::get<double>(v));
      break;
    case pasyn::ValueType::kText:
      std::printf("'%s'", std::get<std::string>(v).c_str());
      break;
    case pasyn::ValueType::kBlob:
      std::printf("<%zu-byte blob>", std::get<pasyn::Blob>(v).size());
      break;
  }
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2 || argc > 3) {
    std::fprintf(stderr, "usage: %s DATABASE [SOCKET]\n", argv[0]);
    return 2;
  }
  const std::string db = argv[1];
  try {
    std::optional<pasyn::WriterServerHandle> server;
    std::string socket_path;
    if (argc == 3) {
      socket_path = argv[2];
    } else {
      server = pasyn::start_writer_server(db);
      socket_path = server->socket_path();
    }
    pasyn::MultiplexedClient client(socket_path);
    auto read_conn = pasyn::connect(db, pasyn::OpenFlags::readonly());
    client.executescript(
        "CREATE TABLE IF NOT EXISTS users (id INTEGER PRIMARY KEY, name TEXT, email TEXT)");
    const auto id = client.execute_returning_rowid("INSERT INTO users (name, email) VALUES (?, ?)",
                                                   {"Alice", "alice@example.com"});
    std::printf("writer: inserted user %lld through %s\n", static_cast<long long>(id),
                socket_path.c_str());
    const auto rows = read_conn.execute_fetchall("SELECT * FROM users ORDER BY id");
    std::printf("reader: %zu row(s) in users\n", rows.size());
    for (const auto& row : rows) {
      std::printf("  (");
      for (std::size_t i = 0; i < row.size(); ++i) {
        if (i) std::printf(", ");
        print_value(row[i]);
      }
      std::printf(")\n");
    }
    read_conn.close();
    if (server) server->stop();
  } catch (const pasyn::Error& e) {
    std::fprintf(stderr, "pasyn-quickstart: %s\n", e.what());
    return 1;
  }
  return 0;
}
