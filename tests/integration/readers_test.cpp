// Readers without the daemon (issue 13): a reader in the database's group, which may read the
// database but not create files next to it (the deployment's /var/lib/pasyn is 0750 pasyn:pasyn),
// reads it while the daemon runs, after it stopped, and before it ever ran on that database.
//
// The daemon runs as a writer uid with umask 0007, as under pasyn-writerd@.service; the reader
// runs as another uid whose only link to the database is the group. Needs root (to switch users).
#include <sqlite3.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "daemon_fixture.hpp"

namespace pasyn::itest {
namespace {

// Numeric ids: setpriv needs no passwd entries for them, and nothing on the machine changes.
constexpr int kGroup = 61300;   // the database's group (pasyn in the deployment)
constexpr int kWriter = 61301;  // the daemon's user (pasyn)
constexpr int kReader = 61302;  // an application in the group, with a primary group of its own

class ReadersTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (::geteuid() != 0) GTEST_SKIP() << "needs root, to run the daemon and a reader as others";
    ASSERT_EQ(::chmod(dir_.path().c_str(), 0711), 0) << std::strerror(errno);
    ASSERT_EQ(::mkdir(state_.c_str(), 0750), 0) << std::strerror(errno);
    ASSERT_EQ(::chown(state_.c_str(), kWriter, kGroup), 0) << std::strerror(errno);
  }

  void TearDown() override {
    if (daemon_.running()) stop_daemon();
  }

  /// `args` as the writer user, with the unit's umask.
  std::vector<std::string> as_writer(const std::vector<std::string>& args) const {
    std::vector<std::string> out = {
        "/bin/sh", "-c",
        "umask 0007 && exec setpriv --reuid=" + std::to_string(kWriter) +
            " --regid=" + std::to_string(kGroup) + " --clear-groups -- \"$@\"",
        "as-writer"};
    out.insert(out.end(), args.begin(), args.end());
    return out;
  }

  void start_daemon() {
    daemon_.spawn(as_writer({PASYN_WRITERD, "--database", db_, "--socket", sock_}), log_, log_);
    ASSERT_TRUE(wait_until_serving());
  }

  ::testing::AssertionResult wait_until_serving() {
    auto answered = pasyn::itest::wait_until_serving(daemon_, sock_);
    if (!answered) answered << "\n" << read_file(log_);
    return answered;
  }

  void stop_daemon() {
    daemon_.signal(SIGTERM);
    const auto [status, killed] = daemon_.wait_or_kill(kStopTimeout);
    EXPECT_FALSE(killed);
    EXPECT_TRUE(exited_with(status, 0)) << describe_status(status) << "\n" << read_file(log_);
  }

  void write_rows(const std::string& key, int n) {
    MultiplexedClient client(sock_, ClientOptions{});
    if (key == "first") client.execute("CREATE TABLE IF NOT EXISTS kv (k TEXT, v INTEGER)");
    for (int i = 0; i < n; ++i) client.execute("INSERT INTO kv VALUES (?, ?)", {key, i});
  }

  /// What the reader (another user, in the group only) prints for count(*) of rows with `key`.
  Completed read_as_group_member(const std::string& key) const {
    return run_to_completion(
        {"/usr/bin/setpriv", "--reuid=" + std::to_string(kReader),
         "--regid=" + std::to_string(kReader), "--groups=" + std::to_string(kGroup), "--",
         PASYN_READ_COUNT, db_, key},
        dir_);
  }

  TempDir dir_;
  std::string state_ = dir_.file("state");  // 0750 writer:group, like /var/lib/pasyn
  std::string db_ = state_ + "/db.sqlite";
  std::string sock_ = state_ + "/s.sock";
  std::string log_ = dir_.file("writerd.log");
  Process daemon_;
};

TEST_F(ReadersTest, AGroupMemberReadsWhileTheDaemonRunsAndAfterItStopped) {
  ASSERT_NO_FATAL_FAILURE(start_daemon());
  write_rows("first", 3);
  auto running = read_as_group_member("first");
  EXPECT_TRUE(exited_with(running.status, 0)) << describe_status(running.status) << running.err;
  EXPECT_EQ(running.out, "3\n");

  stop_daemon();
  // The writer kept -wal and -shm (SQLITE_FCNTL_PERSIST_WAL), readable by the group as the
  // database is (SQLite gives them the database's mode; 0640 with the unit's umask 0007).
  struct stat db {};
  ASSERT_EQ(::stat(db_.c_str(), &db), 0);
  EXPECT_EQ(db.st_mode & 0077, 0040u) << "the database is not group-readable only";
  for (const char* suffix : {"-wal", "-shm"}) {
    struct stat st {};
    ASSERT_EQ(::stat((db_ + suffix).c_str(), &st), 0) << suffix << " is gone after the stop";
    EXPECT_EQ(st.st_mode & 0777, db.st_mode & 0777) << suffix;
  }
  auto stopped = read_as_group_member("first");
  EXPECT_TRUE(exited_with(stopped.status, 0)) << stopped.err;
  EXPECT_EQ(stopped.out, "3\n");

  // And the daemon starts again on the files it left.
  ASSERT_NO_FATAL_FAILURE(start_daemon());
  write_rows("second", 2);
  auto again = read_as_group_member("second");
  EXPECT_EQ(again.out, "2\n") << again.err;
}

// SQLite opens a file it may not write read-only, without a word: the daemon refuses to start on
// it instead of serving a database whose every write fails (a probe's 0444 database was
// "served", every write failing with "attempt to write a readonly database").
TEST_F(ReadersTest, ADatabaseTheWriterMayNotWriteIsRefusedAtStart) {
  {
    sqlite3* db = nullptr;
    ASSERT_EQ(sqlite3_open(db_.c_str(), &db), SQLITE_OK);
    ASSERT_EQ(
        sqlite3_exec(db, "PRAGMA journal_mode=WAL; CREATE TABLE t (x)", nullptr, nullptr, nullptr),
        SQLITE_OK);
    sqlite3_close(db);
  }
  for (const char* suffix : {"", "-wal", "-shm"}) ::chmod((db_ + suffix).c_str(), 0644);  // root's
  const auto r = run_to_completion(as_writer({PASYN_WRITERD, "--database", db_, "--socket", sock_}),
                                   dir_, {}, kStopTimeout);
  EXPECT_FALSE(r.killed) << "pasyn-writerd served a database it may not write";
  EXPECT_TRUE(exited_with(r.status, 1)) << describe_status(r.status) << r.err;
  EXPECT_NE(r.err.find("read-only to this user"), std::string::npos) << r.err;
  EXPECT_FALSE(path_exists(sock_));
}

TEST_F(ReadersTest, AGroupMemberReadsADatabaseTheDaemonHasNotOpenedOncePrepared) {
  // A WAL database that exists without -wal and -shm: put there by an administrator, or left
  // by a writer that did not keep them; the socket unit waits for the daemon's first start.
  {
    sqlite3* db = nullptr;
    ASSERT_EQ(sqlite3_open(db_.c_str(), &db), SQLITE_OK);
    ASSERT_EQ(sqlite3_exec(db,
                           "PRAGMA journal_mode=WAL; CREATE TABLE kv (k TEXT, v INTEGER);"
                           "INSERT INTO kv VALUES ('before', 1), ('before', 2);",
                           nullptr, nullptr, nullptr),
              SQLITE_OK)
        << sqlite3_errmsg(db);
    sqlite3_close(db);
  }
  ASSERT_FALSE(path_exists(db_ + "-wal"));
  ASSERT_FALSE(path_exists(db_ + "-shm"));
  ASSERT_EQ(::chown(db_.c_str(), kWriter, kGroup), 0);
  ASSERT_EQ(::chmod(db_.c_str(), 0660), 0);
  // SQLite's rule, which is why the preparation exists: without the files, the reader fails.
  auto unprepared = read_as_group_member("before");
  EXPECT_FALSE(exited_with(unprepared.status, 0)) << unprepared.out;

  // What pasyn-writerd@.socket runs before the daemon's first start.
  auto prepared = run_to_completion(
      as_writer({PASYN_WRITERD, "--database", db_, "--socket", sock_, "--prepare-readers"}), dir_);
  ASSERT_TRUE(exited_with(prepared.status, 0)) << prepared.err;
  EXPECT_FALSE(path_exists(sock_)) << "--prepare-readers must not serve";
  auto before = read_as_group_member("before");
  EXPECT_TRUE(exited_with(before.status, 0)) << before.err;
  EXPECT_EQ(before.out, "2\n");

  // Preparing a database that does not exist creates nothing.
  const std::string absent = state_ + "/absent.sqlite";
  auto none = run_to_completion(
      as_writer({PASYN_WRITERD, "--database", absent, "--prepare-readers"}), dir_);
  EXPECT_TRUE(exited_with(none.status, 0)) << none.err;
  EXPECT_FALSE(path_exists(absent));
  EXPECT_FALSE(path_exists(absent + "-wal"));
}

}  // namespace
}  // namespace pasyn::itest
