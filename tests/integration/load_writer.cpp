// pasyn-test-load-writer: one process of the multi-process load test in daemon_test.cpp.
//
// Usage: pasyn-test-load-writer SOCKET PROCESS_ID THREADS ROWS_PER_THREAD
// THREADS threads share one MultiplexedClient; each inserts ROWS_PER_THREAD rows into
// acks(proc, thread, seq), waiting for each acknowledgement. Prints "acked N errors M" and
// exits 0 only if every insert was acknowledged.
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <pasyn/pasyn.hpp>
#include <thread>
#include <vector>

int main(int argc, char** argv) {
  if (argc != 5) {
    std::fprintf(stderr, "usage: %s SOCKET PROCESS_ID THREADS ROWS_PER_THREAD\n", argv[0]);
    return 2;
  }
  const std::int64_t proc = std::atoll(argv[2]);
  const int threads = std::atoi(argv[3]);
  const int rows = std::atoi(argv[4]);
  try {
    pasyn::ClientOptions options;
    options.request_timeout = std::chrono::seconds(30);  // never hang the test suite
    pasyn::MultiplexedClient client(argv[1], options);
    std::atomic<long> acked{0}, errors{0};
    std::vector<std::thread> workers;
    for (int t = 0; t < threads; ++t) {
      workers.emplace_back([&, t] {
        for (int seq = 0; seq < rows; ++seq) {
          try {
            client.execute("INSERT INTO acks(proc, thread, seq) VALUES (?, ?, ?)",
                           {proc, std::int64_t{t}, std::int64_t{seq}});
            ++acked;
          } catch (const pasyn::Error& e) {
            if (errors++ == 0) std::fprintf(stderr, "first error: %s\n", e.what());
          }
        }
      });
    }
    for (auto& w : workers) w.join();
    std::printf("acked %ld errors %ld\n", acked.load(), errors.load());
    return errors == 0 ? 0 : 1;
  } catch (const pasyn::Error& e) {
    std::fprintf(stderr, "cannot connect: %s\n", e.what());
    return 3;
  }
}
