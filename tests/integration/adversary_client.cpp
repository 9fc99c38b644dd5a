// pasyn-test-adversary: one hostile (or merely unlucky) peer of the adversarial soak
// (adversarial_soak_test.cpp), run beside the honest soak clients (soak_client.cpp).
//
// Usage: pasyn-test-adversary SOCKET ROLE UID SECONDS SEED LEDGER
//
// Switches to UID (the test runs as root) and then, for SECONDS, plays ROLE:
//   pragma    an allowed, non-admin writer sending statements that would change the shared
//             writer connection or the process for everyone (heap limits, cache and mmap sizes,
//             foreign_keys, TEMP tables/triggers/views that shadow or rewrite the honest
//             clients' table, ATTACH, VACUUM INTO, the idempotency table, wal_checkpoint):
//             every one must be refused. Between attacks it writes rows of its own, which must
//             be acknowledged.
//   squatter  an allowed writer that claims, under its own uid, the idempotency keys the honest
//             soak clients will use ("soak-P-S"): their writes must still run (checked by the
//             honest clients' ledgers), and a squatter's key sent again with another request
//             must be refused with MISUSE, never answered with the recorded reply.
//   readonly  a peer in --read-only-uid: its reads work; writes, keyed requests, pragma
//             settings, BEGIN and CHECKPOINT are refused.
//   refused   a peer outside --allow-uid that sends only a frame header announcing ~16 MiB:
//             it must get its error frame or be closed promptly, never kept waiting.
//   stale     two threads on one client: thread A's transaction is rolled back by the daemon as
//             idle, thread B then begins its own; A's stale handle must act in neither
//             (its execute and commit fail, its rows are absent, B's commit keeps B's rows).
//   fork      a client shared with forked children: each child writes a row on the inherited
//             client (on a connection of its own) and destroys it; the parent's client keeps
//             working after every child.
// Rows go into acks(proc, conn, seq) with proc = 100 + the role's number; LEDGER gets one line
// per row key as in soak_client.cpp ("A conn seq" present once, "X conn seq" absent, "U conn
// seq" unknown). Prints one summary line of name=value figures; exits 0 only if nothing
// unexpected happened (1 otherwise, 2 on bad usage).
#include <fcntl.h>
#include <grp.h>
#include <poll.h>
#include <sqlite3.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <functional>
#include <memory>
#include <mutex>
#include <pasyn/pasyn.hpp>
#include <pasyn/proto/unix_socket.hpp>
#include <random>
#include <string>
#include <thread>
#include <vector>

namespace {

using Clock = std::chrono::steady_clock;
using namespace std::chrono_literals;

constexpr const char* kInsert = "INSERT INTO acks (proc, conn, seq) VALUES (?, ?, ?)";
constexpr auto kReplyBound = 30s;

struct Figures {
  std::atomic<long> attacks{0}, refused{0}, rows{0}, reads{0}, squatted{0}, misuse{0},
      closed_promptly{0}, stale_refused{0}, children{0}, unexpected{0};
};

class Adversary {
 public:
  Adversary(std::string socket, std::int64_t proc, std::uint64_t seed)
      : socket_(std::move(socket)), proc_(proc), rng_(seed) {
    options_.connect_timeout = 10s;
    options_.request_timeout = kReplyBound;
  }

  void unexpected(const std::string& what) {
    if (figures_.unexpected++ < 20) {
      std::fprintf(stderr, "adversary %lld: unexpected: %s\n", static_cast<long long>(proc_),
                   what.c_str());
    }
  }

  /// Runs `call`, which must be refused: PERMISSION (OperationalError SQLITE_PERM) or SQLite's
  /// own "not authorized" (SQLITE_AUTH). Success or any other error is unexpected.
  void must_be_refused(const std::string& what, const std::function<void()>& call) {
    ++figures_.attacks;
    try {
      call();
      unexpected(what + ": was not refused");
    } catch (const pasyn::SqliteError& e) {
      // SQLite's own refusals (an extension loader switched off) say "not authorized".
      if (e.code() == SQLITE_PERM || e.code() == SQLITE_AUTH ||
          std::strstr(e.what(), "not authorized") != nullptr) {
        ++figures_.refused;
      } else {
        unexpected(what + ": refused with the wrong error: " + e.what());
      }
    } catch (const std::exception& e) {
      unexpected(what + ": " + e.what());
    }
  }

  /// One row of our own written and acknowledged, or filed as unknown.
  void write_row(pasyn::MultiplexedClient& client, std::int64_t conn) {
    const std::int64_t seq = next_seq_++;
    try {
      if (client.execute(kInsert, {proc_, conn, seq}) != 1) unexpected("insert changed != 1 row");
      file('A', conn, seq);
      ++figures_.rows;
    } catch (const std::exception& e) {
      unexpected(std::string("honest insert: ") + e.what());
      file('U', conn, seq);
    }
  }

  void file(char tag, std::int64_t conn, std::int64_t seq) {
    std::lock_guard lk(ledger_mu_);
    ledger_ += tag;
    ledger_ += ' ' + std::to_string(conn) + ' ' + std::to_string(seq) + '\n';
  }

  void pragma(Clock::time_point until) {
    pasyn::MultiplexedClient client(socket_, options_);
    static const char* const kAttacks[] = {
        "PRAGMA hard_heap_limit=1",
        "PRAGMA soft_heap_limit=1",
        "PRAGMA cache_size=1",
        "PRAGMA mmap_size=268435456",
        "PRAGMA foreign_keys=ON",
        "PRAGMA case_sensitive_like=1",
        "PRAGMA recursive_triggers=1",
        "PRAGMA max_page_count=1",
        "PRAGMA journal_mode=DELETE",
        "PRAGMA writable_schema=1",
        "PRAGMA threads=4",
        "PRAGMA secure_delete=1",
        "PRAGMA wal_checkpoint(TRUNCATE)",
        "CREATE TEMP TABLE acks (proc, conn, seq)",
        "CREATE TEMP VIEW acks AS SELECT 1 AS proc, 2 AS conn, 3 AS seq",
        ("CREATE TEMP TRIGGER eat AFTER INSERT ON main.acks BEGIN DELETE FROM acks WHERE "
         "rowid = new.rowid; END"),  // one statement (parenthesised for -Wstring-concatenation)
        "CREATE TEMP TABLE scratch (x)",
        "ATTACH DATABASE ':memory:' AS side",
        "SELECT load_extension('libsqlite3.so.0')",
        "VACUUM INTO '/tmp/pasyn-adversary-copy.sqlite'",
        "DELETE FROM pasyn_idempotency",
        "SELECT count(*) FROM pasyn_idempotency",
    };
    std::int64_t n = 0;
    while (Clock::now() < until) {
      const char* sql = kAttacks[rng_() % std::size(kAttacks)];
      must_be_refused(sql, [&] { client.execute_fetchall(sql); });
      if (++n % 4 == 0) write_row(client, 0);
    }
    write_row(client, 0);
  }

  void squatter(Clock::time_point until, int honest_processes) {
    pasyn::MultiplexedClient client(socket_, options_);
    std::int64_t seq = 0;
    while (Clock::now() < until) {
      // The honest processes number their keyed rows from 0 up; claim the next few of each.
      for (int p = 0; p < honest_processes && Clock::now() < until; ++p) {
        const pasyn::WriteOptions key{"soak-" + std::to_string(p) + "-" + std::to_string(seq)};
        const std::int64_t mine = next_seq_++;
        try {
          client.execute(kInsert, {proc_, std::int64_t{1}, mine}, key);
          file('A', 1, mine);
          ++figures_.squatted;
        } catch (const std::exception& e) {
          unexpected(std::string("squatting insert: ") + e.what());
          file('U', 1, mine);
          continue;
        }
        // The same key from the same peer with another request: MISUSE, never the record.
        try {
          client.execute("SELECT 1", {}, key);
          unexpected("a recorded key answered a different request");
        } catch (const pasyn::ProgrammingError& e) {
          if (e.code() == SQLITE_MISUSE) {
            ++figures_.misuse;
          } else {
            unexpected(std::string("reused key: ") + e.what());
          }
        } catch (const std::exception& e) {
          unexpected(std::string("reused key: ") + e.what());
        }
      }
      seq += 7;  // the honest clients number every operation: spread the claims out
    }
  }

  void readonly(Clock::time_point until) {
    pasyn::MultiplexedClient client(socket_, options_);
    std::int64_t n = 0;
    while (Clock::now() < until) {
      switch (n++ % 7) {
        case 0:
          try {
            client.execute_fetchall("SELECT count(*) FROM acks");
            ++figures_.reads;
          } catch (const std::exception& e) {
            unexpected(std::string("read-only SELECT: ") + e.what());
          }
          break;
        case 1: {
          const std::int64_t seq = next_seq_++;
          must_be_refused("read-only INSERT", [&] { client.execute(kInsert, {proc_, 2, seq}); });
          file('X', 2, seq);
          break;
        }
        case 2:
          must_be_refused("read-only keyed SELECT", [&] {
            client.execute("SELECT 1", {}, pasyn::WriteOptions{"ro-" + std::to_string(n)});
          });
          break;
        case 3:
          must_be_refused("read-only PRAGMA user_version=7",
                          [&] { client.execute("PRAGMA user_version=7"); });
          break;
        case 4:
          must_be_refused("read-only PRAGMA cache_size",
                          [&] { client.execute_fetchall("PRAGMA cache_size=5"); });
          break;
        case 5:
          must_be_refused("read-only BEGIN", [&] { auto tx = client.begin(); });
          break;
        case 6:
          must_be_refused("read-only CHECKPOINT", [&] { client.checkpoint(); });
          break;
      }
    }
  }

  void refused(Clock::time_point until) {
    while (Clock::now() < until) {
      const int fd = pasyn::proto::connect_unix(socket_);
      if (fd < 0) {
        // The daemon may refuse at the listen backlog: that is a refusal too.
        std::this_thread::sleep_for(10ms);
        continue;
      }
      const std::uint32_t announced = (16u << 20) - 8;  // a little under the frame limit
      unsigned char header[4];
      for (int i = 0; i < 4; ++i) header[i] = static_cast<unsigned char>(announced >> (8 * i));
      (void)::send(fd, header, sizeof header, MSG_NOSIGNAL);
      // The daemon must answer (an error frame) and close, well before its handshake timeout.
      const auto deadline = Clock::now() + 5s;
      bool closed = false;
      while (!closed && Clock::now() < deadline) {
        pollfd p{fd, POLLIN, 0};
        if (::poll(&p, 1, 100) <= 0) continue;
        char buf[256];
        const ssize_t got = ::recv(fd, buf, sizeof buf, 0);
        if (got <= 0 && !(got < 0 && errno == EINTR)) closed = true;
      }
      ::close(fd);
      if (closed) {
        ++figures_.closed_promptly;
      } else {
        unexpected("a refused peer was kept open for 5 s");
      }
      // Waves of 100, as in the reproduction; a local user who may open the socket can
      // always spend the daemon's CPU by connecting in a loop (see SECURITY.md), which is not
      // what this role measures.
      if (figures_.closed_promptly % 100 == 0) std::this_thread::sleep_for(100ms);
    }
  }

  void stale(Clock::time_point until) {
    pasyn::MultiplexedClient client(socket_, options_);
    while (Clock::now() < until) {
      const std::int64_t x1 = next_seq_++, x2 = next_seq_++, y1 = next_seq_++, y2 = next_seq_++;
      try {
        auto tx1 = client.begin();
        tx1.execute(kInsert, {proc_, 3, x1});
        file('X', 3, x1);  // rolled back by the daemon as idle
        // Thread B begins once the daemon has rolled tx1 back, and keeps its transaction open
        // while the stale handle tries to act.
        std::atomic<int> phase{0};
        std::thread b([&] {
          try {
            auto tx2 = client.begin();
            tx2.execute(kInsert, {proc_, 4, y1});
            phase = 1;
            while (phase != 2) std::this_thread::sleep_for(1ms);
            tx2.execute(kInsert, {proc_, 4, y2});
            tx2.commit();
            file('A', 4, y1);
            file('A', 4, y2);
          } catch (const std::exception& e) {
            unexpected(std::string("honest transaction beside a stale handle: ") + e.what());
            file('U', 4, y1);
            file('U', 4, y2);
            phase = 1;
          }
        });
        while (phase == 0) std::this_thread::sleep_for(1ms);
        try {
          tx1.execute(kInsert, {proc_, 3, x2});
          unexpected("a stale transaction handle executed");
          file('U', 3, x2);
        } catch (const pasyn::Error&) {
          ++figures_.stale_refused;
          file('X', 3, x2);
        }
        try {
          tx1.commit();
          unexpected("a stale transaction handle committed");
        } catch (const pasyn::Error&) {
          ++figures_.stale_refused;
        }
        try {
          tx1.rollback();  // must not roll back tx2
        } catch (const pasyn::Error&) {
        }
        phase = 2;
        b.join();
      } catch (const std::exception& e) {
        unexpected(std::string("stale-handle round: ") + e.what());
      }
      // Each round holds every writer up to the idle timeout (that is what an idle transaction
      // does, by design): leave the honest clients time in between.
      std::this_thread::sleep_for(2s);
    }
  }

  void fork_children(Clock::time_point until) {
    auto client = std::make_unique<pasyn::MultiplexedClient>(socket_, options_);
    write_row(*client, 5);
    while (Clock::now() < until) {
      const std::int64_t seq = next_seq_++;
      int fds[2];
      if (::pipe2(fds, O_CLOEXEC) != 0) {
        unexpected("pipe failed");
        return;
      }
      const pid_t pid = ::fork();
      if (pid == 0) {
        ::close(fds[0]);
        char tag = 'U';
        try {
          if (client->execute(kInsert, {proc_, std::int64_t{6}, seq}) == 1) tag = 'A';
        } catch (const pasyn::Error&) {
          tag = 'E';
        }
        client.reset();  // the child destroys the inherited client
        (void)::write(fds[1], &tag, 1);
        ::_exit(0);
      }
      ::close(fds[1]);
      char tag = '?';
      pollfd p{fds[0], POLLIN, 0};
      if (pid > 0 && ::poll(&p, 1, 30000) == 1 && ::read(fds[0], &tag, 1) == 1) {
        ++figures_.children;
      }
      ::close(fds[0]);
      int status = 0;
      if (pid > 0) ::waitpid(pid, &status, 0);
      if (tag == 'A') {
        file('A', 6, seq);
      } else {
        unexpected(std::string("a forked child could not write on its inherited client (") + tag +
                   ")");
        file('U', 6, seq);
      }
      write_row(*client, 5);  // the parent's client still works
    }
  }

  bool write_ledger(const std::string& path) {
    std::ofstream out(path);
    out << ledger_;
    return static_cast<bool>(out);
  }

  const Figures& figures() const { return figures_; }

 private:
  const std::string socket_;
  const std::int64_t proc_;
  pasyn::ClientOptions options_;
  std::mt19937_64 rng_;
  std::atomic<std::int64_t> next_seq_{0};
  Figures figures_;
  std::mutex ledger_mu_;
  std::string ledger_;  // GUARDED_BY(ledger_mu_)
};

}  // namespace

int main(int argc, char** argv) {
  if (argc != 7) {
    std::fprintf(stderr, "usage: %s SOCKET ROLE UID SECONDS SEED LEDGER\n", argv[0]);
    return 2;
  }
  const std::string role = argv[2];
  const uid_t uid = static_cast<uid_t>(std::strtoul(argv[3], nullptr, 10));
  const int seconds = std::atoi(argv[4]);
  static const char* const kRoles[] = {"pragma",  "squatter", "readonly",
                                       "refused", "stale",    "fork"};
  std::int64_t proc = -1;
  for (std::size_t i = 0; i < std::size(kRoles); ++i) {
    if (role == kRoles[i]) proc = 100 + static_cast<std::int64_t>(i);
  }
  if (proc < 0) {
    std::fprintf(stderr, "unknown role %s\n", role.c_str());
    return 2;
  }
  if (uid != ::getuid()) {
    const gid_t gid = static_cast<gid_t>(uid);
    if (::setgroups(1, &gid) != 0 || ::setgid(gid) != 0 || ::setuid(uid) != 0) {
      std::fprintf(stderr, "cannot switch to uid %u: %s\n", uid, std::strerror(errno));
      return 2;
    }
  }
  Adversary a(argv[1], proc, std::strtoull(argv[5], nullptr, 10));
  const auto until = Clock::now() + std::chrono::seconds(seconds);
  try {
    if (role == "pragma") a.pragma(until);
    if (role == "squatter") a.squatter(until, 2);
    if (role == "readonly") a.readonly(until);
    if (role == "refused") a.refused(until);
    if (role == "stale") a.stale(until);
    if (role == "fork") a.fork_children(until);
  } catch (const std::exception& e) {
    a.unexpected(std::string("role ended early: ") + e.what());
  }
  if (!a.write_ledger(argv[6])) a.unexpected("cannot write the ledger");
  const Figures& f = a.figures();
  std::printf(
      "proc=%lld role_%s=1 attacks=%ld refused=%ld rows=%ld reads=%ld squatted=%ld misuse=%ld "
      "closed_promptly=%ld stale_refused=%ld children=%ld unexpected=%ld\n",
      static_cast<long long>(proc), role.c_str(), f.attacks.load(), f.refused.load(), f.rows.load(),
      f.reads.load(), f.squatted.load(), f.misuse.load(), f.closed_promptly.load(),
      f.stale_refused.load(), f.children.load(), f.unexpected.load());
  return f.unexpected == 0 ? 0 : 1;
}
