// pasyn-test-crash-writer: one writer process of the kill -9 durability test (crash_test.cpp).
//
// Usage: pasyn-test-crash-writer SOCKET WRITER_ID THREADS ACKLOG
// THREADS threads share one MultiplexedClient; each inserts keys "WRITER_ID/thread/seq" into
// acked(k) until the daemon goes away, and appends each key to ACKLOG, one line per key, only
// after its insert was acknowledged. The log therefore lists writes the daemon promised to keep.
// Exits 0 when every thread stopped on ConnectionLostError (the expected end: the test kills the
// daemon), 1 on any other error.
#include <fcntl.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <optional>
#include <pasyn/pasyn.hpp>
#include <string>
#include <thread>
#include <vector>

namespace {

/// Appends whole lines to a file. Only the daemon is killed in the test, never this process, so
/// write() into the page cache is durable enough; the mutex keeps lines from interleaving.
class AckLog {
 public:
  explicit AckLog(const char* path)
      : fd_(::open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644)) {}
  ~AckLog() {
    if (fd_ >= 0) ::close(fd_);
  }
  bool ok() const { return fd_ >= 0; }

  bool append(const std::string& key) {
    const std::string line = key + "\n";
    std::lock_guard lock(mutex_);
    std::size_t done = 0;
    while (done < line.size()) {
      const ssize_t n = ::write(fd_, line.data() + done, line.size() - done);
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) return false;
      done += static_cast<std::size_t>(n);
    }
    return true;
  }

 private:
  int fd_;
  std::mutex mutex_;  // guards writes to fd_
};

}  // namespace

int main(int argc, char** argv) {
  if (argc != 5) {
    std::fprintf(stderr, "usage: %s SOCKET WRITER_ID THREADS ACKLOG\n", argv[0]);
    return 2;
  }
  const std::string writer = argv[2];
  const int threads = std::atoi(argv[3]);
  AckLog log(argv[4]);
  if (!log.ok()) {
    std::fprintf(stderr, "crash-writer: cannot open %s: %s\n", argv[4], std::strerror(errno));
    return 1;
  }

  std::optional<pasyn::MultiplexedClient> client;
  try {
    pasyn::ClientOptions options;
    options.request_timeout = std::chrono::seconds(10);
    client.emplace(argv[1], options);
  } catch (const pasyn::ConnectionLostError&) {
    std::printf("acked 0 (the daemon was gone before the connection)\n");
    return 0;
  } catch (const pasyn::Error& e) {
    std::fprintf(stderr, "crash-writer: cannot connect: %s\n", e.what());
    return 1;
  }

  std::atomic<long> acked{0};
  std::atomic<int> failures{0};
  std::vector<std::thread> workers;
  for (int t = 0; t < threads; ++t) {
    workers.emplace_back([&, t] {
      for (long seq = 0;; ++seq) {
        const std::string key = writer + "/" + std::to_string(t) + "/" + std::to_string(seq);
        try {
          client->execute("INSERT INTO acked (k) VALUES (?)", {key});
        } catch (const pasyn::ConnectionLostError&) {
          return;  // the daemon was killed: the end this test expects
        } catch (const pasyn::Error& e) {
          std::fprintf(stderr, "crash-writer: thread %d, key %s: %s\n", t, key.c_str(), e.what());
          ++failures;
          return;
        }
        if (!log.append(key)) {
          std::fprintf(stderr, "crash-writer: cannot append to the ack log: %s\n",
                       std::strerror(errno));
          ++failures;
          return;
        }
        ++acked;
      }
    });
  }
  for (auto& w : workers) w.join();
  std::printf("acked %ld\n", acked.load());
  return failures == 0 ? 0 : 1;
}
