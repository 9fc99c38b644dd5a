// The change feed under load (issue 14): 4 writer processes for PASYN_FEED_SECONDS (default 20)
// with some requests failing half-way, transactions committed and rolled back, and 2
// subscribers reading: each subscriber sees every committed row change exactly once, in commit
// order, and nothing of the rolled-back work (compared with the table at the end).
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <set>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "daemon_fixture.hpp"

namespace {

using namespace pasyn::itest;
using pasyn::Change;
using pasyn::ChangeKind;

constexpr int kWriters = 4;

int seconds_from_env() {
  const char* v = std::getenv("PASYN_FEED_SECONDS");
  return v != nullptr && *v != '\0' ? std::atoi(v) : 20;
}

// One writer process, forked before the test process has any thread (ThreadSanitizer refuses
// threads started after a multi-threaded fork): waits until `go` becomes readable (the parent
// writes a byte per writer once the table exists and the subscribers listen), then
// inserts (w, n) rows with n counting up, and in between a duplicate that
// fails, a multi-row insert that fails after its first row, a rolled-back transaction, a
// committed transaction that also updates, and a failing script. Exits 0 unless an unexpected
// error happened.
[[noreturn]] void write_for(const std::string& socket, int w, int go, int seconds) {
  int status = 0;
  char byte = 0;
  if (::read(go, &byte, 1) != 1) std::_Exit(5);  // the parent went away
  const auto until = Clock::now() + std::chrono::seconds(seconds);
  try {
    pasyn::ClientOptions options;
    options.connect_timeout = 5s;
    options.request_timeout = 20s;
    pasyn::MultiplexedClient client(socket, options);
    const std::string ins = "INSERT INTO t (w, n) VALUES (?, ?)";
    for (std::int64_t n = 1; Clock::now() < until; ++n) {
      switch (n % 8) {
        case 0:
          try {
            client.execute(ins, {w, n - 1});  // a duplicate
            status = 2;
          } catch (const pasyn::IntegrityError&) {
          }
          break;
        case 1:
          try {  // inserts (w, -n), then fails on a duplicate: undone whole
            client.execute("INSERT INTO t (w, n) VALUES (?, ?), (?, ?)", {w, -n, w, n - 2});
            status = 3;
          } catch (const pasyn::IntegrityError&) {
          }
          break;
        case 2: {
          auto tx = client.begin();
          tx.execute(ins, {w, n});
          tx.execute(ins, {w, n + 1000000000});
          tx.rollback();
          break;
        }
        case 3: {
          auto tx = client.begin();
          tx.execute(ins, {w, n});
          tx.execute("UPDATE t SET touched = touched + 1 WHERE w = ? AND n = ?", {w, n - 4});
          tx.commit();
          break;
        }
        case 4:
          try {
            client.executescript("INSERT INTO t (w, n) VALUES (" + std::to_string(w) + ", " +
                                 std::to_string(-n) + "); INSERT INTO t (w, n) VALUES (" +
                                 std::to_string(w) + ", " + std::to_string(n - 1) + ");");
            status = 4;
          } catch (const pasyn::IntegrityError&) {
          }
          break;
        default:
          client.execute(ins, {w, n});
      }
    }
  } catch (...) {
    status = 1;
  }
  std::_Exit(status);
}

class ChangeFeedLoadTest : public DaemonTest {};

TEST_F(ChangeFeedLoadTest, EveryCommittedChangeReachesEachSubscriberExactlyOnceInCommitOrder) {
  ASSERT_NO_FATAL_FAILURE(start_daemon());
  // The writers first, while this process has no thread yet; they wait for the go.
  int go[2];
  ASSERT_EQ(::pipe(go), 0);
  // Closing the write end without writing releases the writers too: they exit at once (a
  // failed assertion below returns early).
  struct CloseOnExit {
    int& fd;
    ~CloseOnExit() {
      if (fd >= 0) ::close(fd);
    }
  } release{go[1]};
  std::vector<pid_t> children;
  for (int w = 0; w < kWriters; ++w) {
    const pid_t pid = ::fork();
    if (pid == 0) {
      ::close(go[1]);
      write_for(sock_, w, go[0], seconds_from_env());
    }
    ASSERT_GT(pid, 0);
    children.push_back(pid);
  }
  ::close(go[0]);
  auto client = connect_client();
  client.execute(
      "CREATE TABLE t (id INTEGER PRIMARY KEY, w INTEGER, n INTEGER, touched INTEGER DEFAULT 0, "
      "UNIQUE (w, n))");

  struct Reader {
    std::vector<Change> changes;
    std::thread thread;
  };
  std::atomic<bool> stop{false};
  std::atomic<std::int64_t> marker{-1};  // the rowid of the last write, once it is known
  std::vector<Reader> readers(2);
  for (auto& r : readers) {
    auto feed = std::make_shared<pasyn::ChangeFeed>(client.subscribe());
    r.thread = std::thread([&r, &stop, &marker, feed] {
      const auto give_up = Clock::now() + 600s;
      while (Clock::now() < give_up) {
        const auto c = feed->next(200ms);
        if (c) {
          r.changes.push_back(*c);
          continue;
        }
        const auto m = marker.load();
        if (stop && m >= 0 && !r.changes.empty() && r.changes.back().rowid == m) return;
      }
    });
  }

  const char bytes[kWriters] = {};
  ASSERT_EQ(::write(go[1], bytes, kWriters), kWriters);
  ::close(std::exchange(go[1], -1));
  for (const pid_t pid : children) {
    int status = 0;
    ASSERT_EQ(::waitpid(pid, &status, 0), pid);
    EXPECT_TRUE(exited_with(status, 0)) << describe_status(status);
  }
  marker = client.execute_returning_rowid("INSERT INTO t (w, n) VALUES (-1, -1)");
  stop = true;
  for (auto& r : readers) r.thread.join();

  // The committed rows, and how many updates each had.
  auto db = pasyn::connect(db_, pasyn::OpenFlags::readonly());
  std::map<std::int64_t, std::int64_t> rows;
  for (const auto& row : db.execute_fetchall("SELECT id, touched FROM t")) {
    rows[std::get<std::int64_t>(row[0])] = std::get<std::int64_t>(row[1]);
  }
  EXPECT_EQ(db.execute_fetchone("SELECT count(*) FROM t WHERE w >= 0 AND (n < 0 OR n > 1000000000)")
                ->at(0),
            pasyn::Value(std::int64_t{0}))
      << "rolled-back work was committed";
  ASSERT_GT(rows.size(), 100u * kWriters);
  std::printf("committed rows: %zu; changes seen by the subscribers: %zu, %zu\n", rows.size(),
              readers[0].changes.size(), readers[1].changes.size());
  for (std::size_t i = 0; i < readers.size(); ++i) {
    SCOPED_TRACE("subscriber " + std::to_string(i));
    std::set<std::int64_t> inserted;
    std::map<std::int64_t, std::int64_t> updates;
    std::uint64_t last_seq = 0;
    for (const auto& c : readers[i].changes) {
      ASSERT_TRUE(c.kind == ChangeKind::insert || c.kind == ChangeKind::update)
          << "a " << static_cast<int>(c.kind) << " at commit " << c.commit_seq;
      ASSERT_GE(c.commit_seq, last_seq) << "out of commit order";
      last_seq = c.commit_seq;
      ASSERT_EQ(c.table, "t");
      if (c.kind == ChangeKind::insert) {
        EXPECT_TRUE(inserted.insert(c.rowid).second) << "row " << c.rowid << " twice";
        EXPECT_TRUE(rows.contains(c.rowid)) << "row " << c.rowid << " was never committed";
      } else {
        ++updates[c.rowid];
      }
    }
    EXPECT_EQ(inserted.size(), rows.size()) << "committed rows the feed did not report";
    for (const auto& [id, touched] : rows) {
      EXPECT_EQ(updates[id], touched) << "updates of row " << id;
    }
  }
}

}  // namespace
