// pasyn-test-tx-holder: a process that dies holding a transaction, for transaction_test.cpp.
//
// Usage: pasyn-test-tx-holder SOCKET
// Begins a transaction, inserts the row kv(k = 'holder') in it, prints "ready" and then sleeps
// without committing until the test kills it. Exits 3 if nobody does within a minute, so that
// it can never outlive a broken test for long.
#include <chrono>
#include <cstdio>
#include <pasyn/pasyn.hpp>
#include <thread>

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: %s SOCKET\n", argv[0]);
    return 2;
  }
  try {
    pasyn::ClientOptions options;
    options.request_timeout = std::chrono::seconds(10);
    pasyn::MultiplexedClient client(argv[1], options);
    auto tx = client.begin();
    tx.execute("INSERT INTO kv (k) VALUES (?)", {"holder"});
    std::printf("ready\n");
    std::fflush(stdout);
    std::this_thread::sleep_for(std::chrono::minutes(1));
    std::fprintf(stderr, "tx-holder: not killed within a minute\n");
    return 3;
  } catch (const pasyn::Error& e) {
    std::fprintf(stderr, "tx-holder: %s\n", e.what());
    return 1;
  }
}
