// pasyn-bench workers of the ceilings (SPEC §6): the physical limits of this machine for the
// work of the acked-writer rows, with no pasyn in them.
//
// - echo_server: a bare single-threaded epoll echo server on a Unix stream socket. This is the one
//   place a hand-written event loop is the point: it is the baseline no design can beat. With
//   commit=full|normal it is the leanest group commit there is (groupcommit16): each time epoll
//   reports ready sockets it reads them, runs one transaction with one INSERT per complete
//   request, commits, and only then replies; one thread, no queue, no hand-off. gather_us=
//   makes each batch wait for every client (groupcommit16_gathered), commit=pipelined syncs the
//   WAL and replies on a second thread while the first goes on (groupcommit16_pipelined).
// - echo_clients: synchronous clients, one connection per thread, each sending a message and
//   waiting for its echo (ceiling_ipc16 with 4 processes x 4 threads; t_rtt with one thread).
// - commit_txns: one direct connection committing `rows`-row transactions at synchronous=FULL in
//   WAL, back to back (t_commit16).
#include <fcntl.h>
#include <sqlite3.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <condition_variable>
#include <cstring>
#include <mutex>
#include <optional>
#include <pasyn/proto/unix_socket.hpp>
#include <thread>
#include <unordered_map>

#include "batch_committer.hpp"
#include "sqlite_direct.hpp"
#include "worker.hpp"

namespace pasyn_bench {

namespace {

sockaddr_un unix_address(const std::string& path) {
  const auto addr = pasyn::proto::unix_address(path);
  if (!addr) throw std::runtime_error("not a Unix socket path: " + path);
  return *addr;
}

// Closes a descriptor on scope exit.
class Fd {
 public:
  explicit Fd(int fd) : fd_(fd) {}
  Fd(const Fd&) = delete;
  Fd& operator=(const Fd&) = delete;
  ~Fd() {
    if (fd_ >= 0) ::close(fd_);
  }
  int get() const { return fd_; }

 private:
  int fd_;
};

}  // namespace

namespace {

// commit=pipelined (flush pipelining): the server's connection runs at synchronous=NORMAL, so a
// COMMIT writes the WAL without syncing it, and this second thread answers each commit's
// requests once an fdatasync() of the WAL that began after that COMMIT has returned. The reading
// thread meanwhile goes on reading and committing, so the sync of one batch overlaps the next
// batch's round trips and INSERTs; an answered row is on disk as at synchronous=FULL.
class SyncedReplies {
 public:
  SyncedReplies(std::string wal, std::size_t size) : wal_(std::move(wal)), size_(size) {
    thread_ = std::thread([this] { run(); });
  }
  SyncedReplies(const SyncedReplies&) = delete;
  SyncedReplies& operator=(const SyncedReplies&) = delete;
  ~SyncedReplies() {
    stop();
    if (fd_ >= 0) ::close(fd_);
  }
  // After a COMMIT: its requests, as (client descriptor, complete requests).
  void committed(const std::vector<std::pair<int, std::int64_t>>& ready) {
    {
      std::lock_guard lk(mu_);
      if (!error_.empty()) throw std::runtime_error(error_);
      pending_.insert(pending_.end(), ready.begin(), ready.end());
    }
    cv_.notify_one();
  }
  // Answers what is pending, stops the thread and returns the bytes it sent.
  std::uint64_t finish() {
    stop();
    if (!error_.empty()) throw std::runtime_error(error_);
    return bytes_;
  }
  std::uint64_t syncs() const { return syncs_; }

 private:
  void stop() {
    if (!thread_.joinable()) return;
    {
      std::lock_guard lk(mu_);
      stopping_ = true;
    }
    cv_.notify_one();
    thread_.join();
  }
  void run() {
    std::vector<std::pair<int, std::int64_t>> taken;
    std::vector<char> reply;
    for (;;) {
      {
        std::unique_lock lk(mu_);
        cv_.wait(lk, [&] { return stopping_ || !pending_.empty(); });
        if (pending_.empty()) return;  // stopping, and everything answered
        taken.swap(pending_);
      }
      if (fd_ < 0) fd_ = ::open(wal_.c_str(), O_RDONLY | O_CLOEXEC);
      if (fd_ < 0 || ::fdatasync(fd_) != 0) {  // the rows' outcome is unknown: answer none
        const int error = errno;
        std::lock_guard lk(mu_);
        error_ = "fdatasync of " + wal_ + ": " + std::strerror(error);
        return;
      }
      ++syncs_;
      for (const auto& [fd, complete] : taken) {
        const std::size_t len = static_cast<std::size_t>(complete) * size_;
        if (reply.size() < len) reply.resize(len, 'x');
        if (write_all(fd, reply.data(), len)) bytes_ += len;
      }
      taken.clear();
    }
  }
  const std::string wal_;
  const std::size_t size_;
  int fd_ = -1;                          // the WAL, opened after the first COMMIT created it
  std::uint64_t bytes_ = 0, syncs_ = 0;  // this thread's until stop()
  std::mutex mu_;
  std::condition_variable cv_;
  std::vector<std::pair<int, std::int64_t>> pending_;  // guarded by mu_
  bool stopping_ = false;                              // guarded by mu_
  std::string error_;                                  // guarded by mu_ until stop()
  std::thread thread_;
};

}  // namespace

// echo_server socket=PATH [commit=full|normal|pipelined db=PATH size=N [gather_us=U]]: listens,
// writes "ready", then echoes every byte it reads back on the same connection until the
// orchestrator's byte (or EOF) arrives on stdin; reports the bytes. Client descriptors stay
// blocking: each readiness gets one read, and a client waits for its reply before sending again,
// so a reply never waits for buffer space. Without commit= each read is echoed at once. With it,
// the reads of one epoll batch are cut into N-byte requests, committed as one transaction (one
// INSERT per request, the writer being the client's accept order), and each request is then
// answered with N bytes (commit=pipelined: see SyncedReplies); the report adds the rows and
// commits. With gather_us=U a batch waits, up to U us after its first request, until every
// connected client has a request in it: all writers in every commit.
void worker_echo_server(const Args& a) {
  const std::string path = arg(a, "socket");
  std::optional<BatchCommitter> committer;
  std::size_t size = 0;
  std::optional<SyncedReplies> synced;
  if (const auto it = a.find("commit"); it != a.end()) {
    if (it->second != "full" && it->second != "normal" && it->second != "pipelined") {
      throw std::runtime_error("commit= must be full, normal or pipelined, not " + it->second);
    }
    committer.emplace(arg(a, "db"), it->second == "full");
    size = static_cast<std::size_t>(arg_int(a, "size"));
    if (it->second == "pipelined") synced.emplace(arg(a, "db") + "-wal", size);
  }
  Fd listener(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0));
  const sockaddr_un addr = unix_address(path);
  if (listener.get() < 0 ||
      ::bind(listener.get(), reinterpret_cast<const sockaddr*>(&addr), sizeof addr) != 0 ||
      ::listen(listener.get(), 256) != 0) {
    throw std::runtime_error("echo server cannot listen on " + path + ": " + std::strerror(errno));
  }
  Fd ep(::epoll_create1(EPOLL_CLOEXEC));
  if (ep.get() < 0) throw std::runtime_error("epoll_create1 failed");
  auto watch = [&](int fd) {
    epoll_event ev{};
    ev.events = EPOLLIN;
    ev.data.fd = fd;
    if (::epoll_ctl(ep.get(), EPOLL_CTL_ADD, fd, &ev) != 0) {
      throw std::runtime_error("epoll_ctl failed");
    }
  };
  watch(listener.get());
  watch(0);  // the orchestrator's stop byte
  announce_ready();

  struct Client {
    std::int64_t writer;  // accept order
    std::size_t partial;  // bytes of a request not yet complete (commit= only)
  };
  std::unordered_map<int, Client> clients;
  std::uint64_t bytes = 0;
  std::vector<char> buf(64 * 1024);  // a pipelining client's whole window in one read
  epoll_event events[64];
  // commit= only: the complete requests of this batch, per client, and their replies.
  std::vector<std::pair<int, std::int64_t>> ready;
  std::vector<std::pair<std::int64_t, std::int64_t>> batch;
  std::vector<char> reply;
  const auto gather = std::chrono::microseconds(a.count("gather_us") ? arg_int(a, "gather_us") : 0);
  Clock::time_point gather_until{};  // while a batch gathers
  std::size_t open_clients = 0;      // what a gathered batch waits for (not those that left)
  for (bool stop = false; !stop;) {
    int n;
    if (!batch.empty()) {  // gathering: wait for the rest until gather_until
      const auto left = std::max<std::int64_t>(
          std::chrono::duration_cast<std::chrono::nanoseconds>(gather_until - Clock::now()).count(),
          0);
      const timespec ts{0, static_cast<long>(left)};
      n = ::epoll_pwait2(ep.get(), events, 64, &ts, nullptr);
    } else {
      n = ::epoll_wait(ep.get(), events, 64, 1000);
    }
    if (n < 0 && errno != EINTR) throw std::runtime_error("epoll_wait failed");
    for (int i = 0; i < n; ++i) {
      const int fd = events[i].data.fd;
      if (fd == 0) {
        stop = true;
      } else if (fd == listener.get()) {
        for (;;) {
          const int c = ::accept4(listener.get(), nullptr, nullptr, SOCK_CLOEXEC);
          if (c < 0) break;  // EAGAIN: accepted all that were waiting
          clients.emplace(c, Client{static_cast<std::int64_t>(clients.size()), 0});
          ++open_clients;
          watch(c);
        }
      } else {
        const ssize_t r = ::read(fd, buf.data(), buf.size());
        if (r > 0 && committer) {
          Client& c = clients.at(fd);
          c.partial += static_cast<std::size_t>(r);
          const auto complete = static_cast<std::int64_t>(c.partial / size);
          c.partial %= size;
          if (complete > 0) {
            ready.emplace_back(fd, complete);
            batch.emplace_back(c.writer, complete);
          }
        } else if (r > 0 && write_all(fd, buf.data(), static_cast<std::size_t>(r))) {
          bytes += static_cast<std::uint64_t>(r);
        } else if (r == 0 || (r < 0 && errno != EINTR)) {
          // Left open (not reused): a new client never inherits this one's entry.
          ::epoll_ctl(ep.get(), EPOLL_CTL_DEL, fd, nullptr);
          --open_clients;
        }
      }
    }
    if (batch.empty()) continue;
    if (gather.count() > 0 && batch.size() < open_clients) {
      if (gather_until == Clock::time_point{}) gather_until = Clock::now() + gather;
      if (Clock::now() < gather_until) continue;
    }
    gather_until = {};
    committer->commit(batch);
    if (synced) {
      synced->committed(ready);
      ready.clear();
      batch.clear();
      continue;
    }
    for (const auto& [fd, complete] : ready) {
      const std::size_t len = static_cast<std::size_t>(complete) * size;
      if (reply.size() < len) reply.resize(len, 'x');
      if (write_all(fd, reply.data(), len)) bytes += len;
    }
    ready.clear();
    batch.clear();
  }
  if (synced) {
    bytes += synced->finish();
    put("syncs", static_cast<double>(synced->syncs()));
  }
  for (const auto& [fd, c] : clients) ::close(fd);
  put("bytes", static_cast<double>(bytes));
  if (committer) {
    put("rows", static_cast<double>(committer->rows()));
    put("commits", static_cast<double>(committer->commits()));
  }
  finish_report();
}

namespace {

// A client's blocking connection to the echo server at `addr`; on failure the gate still opens
// (run_threads_and_report waits for every thread) before the error is thrown.
int connect_echo(const sockaddr_un& addr, StartGate& gate) {
  const int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd >= 0 && ::connect(fd, reinterpret_cast<const sockaddr*>(&addr), sizeof addr) == 0) {
    return fd;
  }
  const std::string why = std::strerror(errno);
  if (fd >= 0) ::close(fd);
  gate.arrive_and_wait();
  throw std::runtime_error("cannot connect to the echo server: " + why);
}

// The pipelined form of echo_clients (window=W ops=K).
void echo_pipelined(const Args& a) {
  const sockaddr_un addr = unix_address(arg(a, "socket"));
  const std::int64_t window = arg_int(a, "window");
  const std::int64_t ops = arg_int(a, "ops");
  const auto size = static_cast<std::size_t>(arg_int(a, "size"));
  run_threads_and_report(1, 0, [&](int, StartGate& gate, ThreadStats& s) {
    Fd fd(connect_echo(addr, gate));
    // The window's messages in one buffer; every echo read is answered by as many new messages
    // (at most what is left to send), so at most W are ever in flight.
    std::vector<char> out(static_cast<std::size_t>(window) * size, 'x'), in(64 * 1024);
    if (!gate.arrive_and_wait()) return;
    std::int64_t sent = std::min(window, ops), echoed = 0;
    std::size_t partial = 0;
    if (!write_all(fd.get(), out.data(), static_cast<std::size_t>(sent) * size)) {
      return s.fail("the echo server went away");
    }
    while (echoed < ops) {
      const ssize_t r = ::read(fd.get(), in.data(), in.size());
      if (r <= 0) return s.fail("the echo server went away");
      partial += static_cast<std::size_t>(r);
      const auto complete = static_cast<std::int64_t>(partial / size);
      partial %= size;
      echoed += complete;
      const std::int64_t more = std::min(complete, ops - sent);
      if (more > 0 && !write_all(fd.get(), out.data(), static_cast<std::size_t>(more) * size)) {
        return s.fail("the echo server went away");
      }
      sent += more;
    }
    s.ops = echoed;
  });
}

}  // namespace

// echo_clients socket=PATH threads=T seconds=S size=N: T threads, each with its own connection,
// sending N bytes and reading the N-byte echo, one at a time, until the deadline.
// echo_clients socket=PATH window=W ops=K size=N: one thread keeping W messages in flight (a new
// one for each echo read) until K are echoed; one op per echo, no latencies.
void worker_echo_clients(const Args& a) {
  const std::string path = arg(a, "socket");
  if (a.count("window")) return echo_pipelined(a);
  const int threads = static_cast<int>(arg_int(a, "threads"));
  const double seconds = arg_double(a, "seconds");
  const auto size = static_cast<std::size_t>(arg_int(a, "size"));
  const sockaddr_un addr = unix_address(path);
  run_threads_and_report(threads, seconds, [&](int, StartGate& gate, ThreadStats& s) {
    Fd fd(connect_echo(addr, gate));
    std::vector<char> out(size, 'x'), in(size);
    if (!gate.arrive_and_wait()) return;
    const auto deadline = gate.deadline();
    for (;;) {
      const auto t0 = Clock::now();
      if (t0 >= deadline) break;
      if (!write_all(fd.get(), out.data(), size) || !read_exact(fd.get(), in.data(), size)) {
        s.fail("the echo server went away");
        break;
      }
      const auto t1 = Clock::now();
      if (t1 <= deadline) {
        ++s.ops;
        s.hist.add(nanos(t1 - t0));
      }
    }
  });
}

// commit_txns db=PATH rows=R seconds=S: one connection (WAL, synchronous=FULL) committing
// BEGIN; R one-row INSERTs; COMMIT back to back until the deadline; an op is a transaction.
void worker_commit_txns(const Args& a) {
  const std::string path = arg(a, "db");
  const std::int64_t rows = arg_int(a, "rows");
  const double seconds = arg_double(a, "seconds");
  run_threads_and_report(1, seconds, [&](int, StartGate& gate, ThreadStats& s) {
    std::optional<SqliteDb> db;
    std::optional<Stmt> begin, insert, commit;
    try {
      db.emplace(path, kDirectWriteFlags);
      db->configure_writer(true);
      begin.emplace(*db, "BEGIN");
      insert.emplace(*db, kInsertSql);
      commit.emplace(*db, "COMMIT");
    } catch (...) {
      gate.arrive_and_wait();
      throw;
    }
    if (!gate.arrive_and_wait()) return;
    const auto deadline = gate.deadline();
    auto step = [](sqlite3_stmt* st) {
      const int rc = sqlite3_step(st);
      sqlite3_reset(st);
      return rc == SQLITE_DONE;
    };
    for (;;) {
      const auto t0 = Clock::now();
      if (t0 >= deadline) break;
      bool ok = step(*begin);
      for (std::int64_t i = 0; ok && i < rows; ++i) {
        sqlite3_bind_int64(*insert, 1, i);
        insert->text(2, kPayload);
        ok = step(*insert);
      }
      ok = ok && step(*commit);
      const auto t1 = Clock::now();
      if (!ok) {
        s.fail(sqlite3_errmsg(db->get()));
        if (!sqlite3_get_autocommit(db->get())) db->exec("ROLLBACK");
        continue;
      }
      if (t1 <= deadline) {
        ++s.ops;
        s.hist.add(nanos(t1 - t0));
      }
    }
  });
}

}  // namespace pasyn_bench
