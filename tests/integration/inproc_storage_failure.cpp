// Helper of batch_integrity_test.cpp: an in-process writer server (start_writer_server) whose
// COMMIT's fsync fails. Run with fault_inject.c preloaded and $PASYN_FAULT_FILE set; arms the
// fault itself. Prints what the write and join() did; exits 0 when the write got
// ConnectionLostError and join() threw OperationalError.
//
// Usage: pasyn-test-inproc-storage-failure DATABASE
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <pasyn/pasyn.hpp>

int main(int argc, char** argv) {
  using namespace std::chrono_literals;
  const char* trigger = std::getenv("PASYN_FAULT_FILE");
  if (argc != 2 || !trigger) {
    std::fprintf(stderr, "usage: PASYN_FAULT_FILE=... %s DATABASE\n", argv[0]);
    return 2;
  }
  auto server = pasyn::start_writer_server(argv[1]);
  pasyn::ClientOptions options;
  options.connect_timeout = 5s;
  options.request_timeout = 10s;
  pasyn::MultiplexedClient client(server.socket_path(), options);
  client.execute("CREATE TABLE t (v)");
  std::ofstream(trigger) << "fsync EIO -wal\n";
  try {
    client.execute("INSERT INTO t VALUES (1)");
    std::puts("write: answered as committed");
    return 1;
  } catch (const pasyn::ConnectionLostError& e) {
    std::printf("write: ConnectionLostError: %s\n", e.what());
  } catch (const std::exception& e) {
    std::printf("write: %s\n", e.what());
    return 1;
  }
  try {
    server.join();
    std::puts("join: returned");
    return 1;
  } catch (const pasyn::OperationalError& e) {
    std::printf("join: OperationalError %d: %s\n", e.extended_code(), e.what());
  }
  return 0;
}
