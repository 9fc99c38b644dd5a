// Integration tests of the admin role and of BACKUP against the real pasyn-writerd: SHUTDOWN,
// CHECKPOINT and BACKUP only for --admin-uid/--admin-gid (default: the daemon's user and root),
// BACKUP names confined to --backup-dir without following symlinks, and a backup that is a
// consistent copy made while writes go on (PROTOCOL.md §5, SECURITY.md).
#include <fcntl.h>
#include <grp.h>
#include <poll.h>
#include <pwd.h>
#include <sqlite3.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <future>
#include <map>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "../sanitizers.hpp"
#include "daemon_fixture.hpp"

namespace {

using namespace pasyn::itest;
namespace fs = std::filesystem;

bool starts_with(const std::string& text, const std::string& prefix) {
  return text.rfind(prefix, 0) == 0;
}

/// The first column of the first row of `sql` on the database file at `path`, as text; a
/// description of the failure if there is none.
std::string query_text(const std::string& path, const std::string& sql) {
  sqlite3* db = nullptr;
  sqlite3_stmt* stmt = nullptr;
  std::string out = "(cannot open " + path + ")";
  if (sqlite3_open_v2(path.c_str(), &db, SQLITE_OPEN_READONLY, nullptr) == SQLITE_OK) {
    out = "(cannot run " + sql + ": ";
    if (sqlite3_prepare_v2(db, sql.c_str(), -1, &stmt, nullptr) == SQLITE_OK &&
        sqlite3_step(stmt) == SQLITE_ROW) {
      const auto* text = sqlite3_column_text(stmt, 0);
      out = text ? reinterpret_cast<const char*>(text) : "NULL";
    } else {
      out += std::string(sqlite3_errmsg(db)) + ")";
    }
  }
  sqlite3_finalize(stmt);
  sqlite3_close(db);
  return out;
}

/// Every entry of `dir`, recursively, by path relative to it.
std::vector<std::string> tree(const fs::path& dir) {
  std::vector<std::string> out;
  std::error_code ec;
  for (auto it = fs::recursive_directory_iterator(dir, ec); !ec && it != fs::end(it);
       it.increment(ec)) {
    out.push_back(fs::relative(it->path(), dir).string());
  }
  std::sort(out.begin(), out.end());
  return out;
}

class AdminTest : public DaemonTest {
 protected:
  std::string backups() const { return dir_.file("backups"); }
  std::string backup_file(const std::string& name) const { return backups() + "/" + name; }

  void create_table() {
    connect_client().execute("CREATE TABLE IF NOT EXISTS t (id INTEGER PRIMARY KEY, b BLOB)");
  }
};

/// Peers of another user: the tests run as root (the daemon too) and become `nobody`.
class AdminRoleTest : public AdminTest {
 protected:
  void SetUp() override {
    if (::geteuid() != 0) GTEST_SKIP() << "needs root, to run a client as another user (nobody)";
#if PASYN_TEST_TSAN
    GTEST_SKIP() << "forks a multi-threaded process: not supported under ThreadSanitizer";
#endif
    const passwd* pw = ::getpwnam("nobody");
    ASSERT_NE(pw, nullptr) << "no user nobody";
    uid_ = pw->pw_uid;
    gid_ = pw->pw_gid;
    ASSERT_EQ(::chmod(dir_.path().c_str(), 0755), 0) << std::strerror(errno);
  }

  /// As nobody: a write, then CHECKPOINT, BACKUP ("nobody.sqlite") and SHUTDOWN.
  AsUser nobody_tries_everything() const {
    const std::string sock = sock_;
    return run_as(uid_, gid_, [&sock](StepLog& log) {
      std::optional<pasyn::MultiplexedClient> client;
      const auto connected = [&]() -> pasyn::MultiplexedClient& {
        if (!client) throw std::runtime_error("not connected");
        return *client;
      };
      log.run("connect", [&] { client.emplace(sock, bounded_options()); });
      log.run("write", [&] { connected().execute("INSERT INTO t (b) VALUES (1)"); });
      log.run("checkpoint", [&] { connected().checkpoint("PASSIVE"); });
      log.run("backup", [&] { connected().backup("nobody.sqlite"); });
      log.run("shutdown", [&] { connected().shutdown_server(); });
    });
  }

  void expect_all_admin_requests_refused(const AsUser& out) {
    EXPECT_EQ(out["connect"], "ok");
    EXPECT_EQ(out["write"], "ok");
    for (const char* step : {"checkpoint", "backup", "shutdown"}) {
      const std::string got = out[step];
      EXPECT_TRUE(starts_with(got, kRefusedPermission)) << step << ": " << got;
      EXPECT_NE(got.find("--admin-uid"), std::string::npos) << step << ": " << got;
    }
  }

  uid_t uid_ = 0;
  gid_t gid_ = 0;
};

TEST_F(AdminRoleTest, ANonAdminWriterGetsPermissionForShutdownCheckpointAndBackup) {
  ASSERT_NO_FATAL_FAILURE(start_daemon({"--socket-mode", "0666"}));
  create_table();
  expect_all_admin_requests_refused(nobody_tries_everything());
  EXPECT_FALSE(path_exists(backup_file("nobody.sqlite")));
  // Still serving: SHUTDOWN was not obeyed.
  auto client = connect_client();
  EXPECT_TRUE(client.ping());
  EXPECT_EQ(query_int("SELECT count(*) FROM t"), 1);
}

TEST_F(AdminRoleTest, TheDaemonsOwnUserIsAdminByDefault) {
  ASSERT_NO_FATAL_FAILURE(start_daemon({"--socket-mode", "0666"}));
  create_table();
  auto client = connect_client();  // root: the daemon's own uid
  EXPECT_EQ(outcome_of([&] { client.checkpoint("PASSIVE"); }), "ok");
  EXPECT_EQ(outcome_of([&] { client.backup("root.sqlite"); }), "ok");
  EXPECT_TRUE(path_exists(backup_file("root.sqlite")));
  EXPECT_EQ(outcome_of([&] { client.shutdown_server(); }), "ok");
  const auto status = daemon_.wait_exit(kStopTimeout);
  ASSERT_TRUE(status.has_value()) << "SHUTDOWN from the daemon's own user did not stop it";
  EXPECT_TRUE(exited_with(*status, 0)) << describe_status(*status);
}

TEST_F(AdminRoleTest, AdminUidAdmitsTheListedUserAndReplacesTheDefault) {
  ASSERT_NO_FATAL_FAILURE(start_daemon({"--socket-mode", "0666", "--admin-uid", "nobody"}));
  create_table();
  // The list replaces the default: the daemon's own user (root here) is no admin any more.
  auto root = connect_client();
  EXPECT_TRUE(starts_with(outcome_of([&] { root.checkpoint("PASSIVE"); }), kRefusedPermission));
  EXPECT_TRUE(starts_with(outcome_of([&] { root.backup("root.sqlite"); }), kRefusedPermission));
  const auto out = nobody_tries_everything();
  for (const char* step : {"connect", "write", "checkpoint", "backup", "shutdown"}) {
    EXPECT_EQ(out[step], "ok") << step;
  }
  EXPECT_TRUE(path_exists(backup_file("nobody.sqlite")));
  const auto status = daemon_.wait_exit(kStopTimeout);
  ASSERT_TRUE(status.has_value()) << "SHUTDOWN from an --admin-uid user did not stop it";
  EXPECT_TRUE(exited_with(*status, 0)) << describe_status(*status);
}

TEST_F(AdminRoleTest, AdminGidAdmitsMembersOfTheListedGroup) {
  ASSERT_NO_FATAL_FAILURE(
      start_daemon({"--socket-mode", "0666", "--admin-gid", std::to_string(gid_)}));
  create_table();
  const auto out = nobody_tries_everything();
  for (const char* step : {"checkpoint", "backup", "shutdown"}) {
    EXPECT_EQ(out[step], "ok") << step;
  }
  const auto status = daemon_.wait_exit(kStopTimeout);
  ASSERT_TRUE(status.has_value());
  EXPECT_TRUE(exited_with(*status, 0)) << describe_status(*status);
}

TEST_F(AdminRoleTest, AnAdminUidListWithoutThePeerRefusesItEvenThoughItMayWrite) {
  ASSERT_NO_FATAL_FAILURE(start_daemon({"--socket-mode", "0666", "--admin-uid", "0"}));
  create_table();
  expect_all_admin_requests_refused(nobody_tries_everything());
}

// ---- SHUTDOWN, CHECKPOINT and BACKUP against an open client transaction -------------------------

TEST_F(AdminTest, ShutdownDuringAnOpenTransactionRollsItBackAndStopsAtOnce) {
  // Long waits: a SHUTDOWN that waited for the transaction would not be answered in time.
  ASSERT_NO_FATAL_FAILURE(
      start_daemon({"--lock-wait", "60000", "--transaction-idle-timeout", "60000"}));
  create_table();
  auto owner = connect_client();
  auto tx = owner.begin();
  tx.execute("INSERT INTO t (b) VALUES ('uncommitted')");
  auto admin = connect_client();
  const auto before = Clock::now();
  EXPECT_EQ(outcome_of([&] { admin.shutdown_server(); }), "ok");
  EXPECT_LT(Clock::now() - before, kReplyTimeout);
  EXPECT_THROW(tx.commit(), pasyn::Error);
  const auto status = daemon_.wait_exit(kStopTimeout);
  ASSERT_TRUE(status.has_value());
  EXPECT_TRUE(exited_with(*status, 0)) << describe_status(*status);
  EXPECT_EQ(query_int("SELECT count(*) FROM t"), 0);
}

TEST_F(AdminTest, BackupDuringAnOpenTransactionDoesNotWaitAndHoldsOnlyCommittedRows) {
  ASSERT_NO_FATAL_FAILURE(
      start_daemon({"--lock-wait", "60000", "--transaction-idle-timeout", "60000"}));
  create_table();
  auto owner = connect_client();
  owner.execute("INSERT INTO t (b) VALUES ('committed')");
  auto tx = owner.begin();
  tx.execute("INSERT INTO t (b) VALUES ('uncommitted')");
  auto admin = connect_client();
  EXPECT_EQ(outcome_of([&] { admin.backup("during-tx.sqlite"); }), "ok");
  tx.commit();
  EXPECT_EQ(query_text(backup_file("during-tx.sqlite"), "SELECT count(*) FROM t"), "1");
  EXPECT_EQ(query_int("SELECT count(*) FROM t"), 2);
}

// ---- BACKUP names and where the file goes ------------------------------------------------------

TEST_F(AdminTest, BackupRefusesPathsAndReservedNamesAndWritesNothing) {
  ASSERT_NO_FATAL_FAILURE(start_daemon());
  create_table();
  auto client = connect_client();
  const std::string absolute = dir_.file("abs.sqlite");
  const auto before = tree(dir_.path());
  for (const std::string& name :
       {std::string("../x.sqlite"), absolute, std::string("a/b"), std::string(".."),
        std::string("."), std::string(".hidden"), std::string("")}) {
    const std::string got = outcome_of([&] { client.backup(name); });
    EXPECT_TRUE(starts_with(got, "ProgrammingError")) << "'" << name << "': " << got;
  }
  EXPECT_FALSE(path_exists(absolute));
  EXPECT_FALSE(path_exists(dir_.path().parent_path() / "x.sqlite"));
  std::vector<std::string> after = tree(dir_.path());
  std::erase(after, "backups");  // it may have been created; nothing is in it
  EXPECT_EQ(after, before);
  EXPECT_TRUE(tree(backups()).empty());
  EXPECT_TRUE(client.ping());
}

TEST_F(AdminTest, BackupGoesIntoTheDefaultDirectoryCreatedWithMode0750AndTheDatabasesMode) {
  ASSERT_NO_FATAL_FAILURE(start_daemon());
  create_table();
  ASSERT_EQ(::chmod(db_.c_str(), 0640), 0);
  auto client = connect_client();
  client.execute("INSERT INTO t (b) VALUES (1)");
  const auto report = client.backup("copy.sqlite");
  EXPECT_EQ(std::get<std::string>(figure(report, "path")), backup_file("copy.sqlite"));
  struct stat dir {
  }, file{};
  ASSERT_EQ(::stat(backups().c_str(), &dir), 0);
  EXPECT_EQ(dir.st_mode & 07777, 0750u);
  ASSERT_EQ(::lstat(backup_file("copy.sqlite").c_str(), &file), 0);
  EXPECT_TRUE(S_ISREG(file.st_mode));
  EXPECT_EQ(file.st_mode & 07777, 0640u);
  EXPECT_EQ(query_text(backup_file("copy.sqlite"), "SELECT count(*) FROM t"), "1");
  EXPECT_EQ(tree(backups()), std::vector<std::string>{"copy.sqlite"}) << "temporary file left";
}

TEST_F(AdminTest, BackupDirFlagChoosesTheDirectory) {
  const std::string elsewhere = dir_.file("elsewhere");
  ASSERT_NO_FATAL_FAILURE(start_daemon({"--backup-dir", elsewhere}));
  create_table();
  auto client = connect_client();
  client.backup("copy.sqlite");
  EXPECT_EQ(query_text(elsewhere + "/copy.sqlite", "PRAGMA integrity_check"), "ok");
  EXPECT_FALSE(path_exists(backups()));
}

TEST_F(AdminTest, ABackupDirThatIsTheDatabasesDirectoryIsRefusedAtStart) {
  const auto r =
      run_to_completion(daemon_args({"--backup-dir", dir_.path().string()}, sock_), dir_, {}, 20s);
  EXPECT_TRUE(exited_with(r.status, 1)) << describe_status(r.status);  // cannot start
  EXPECT_NE(r.err.find("the database's own directory"), std::string::npos) << r.err;
  EXPECT_FALSE(path_exists(db_)) << "a refused start created the database";
}

TEST_F(AdminTest, ASymlinkAtTheTargetNameIsReplacedNotFollowed) {
  ASSERT_NO_FATAL_FAILURE(start_daemon());
  create_table();
  const std::string victim = dir_.file("victim");
  { std::ofstream(victim) << "precious"; }
  ASSERT_EQ(::mkdir(backups().c_str(), 0750), 0);
  ASSERT_EQ(::symlink(victim.c_str(), backup_file("copy.sqlite").c_str()), 0);
  auto client = connect_client();
  client.execute("INSERT INTO t (b) VALUES (1)");
  EXPECT_EQ(outcome_of([&] { client.backup("copy.sqlite"); }), "ok");
  EXPECT_EQ(read_file(victim), "precious");
  struct stat st {};
  ASSERT_EQ(::lstat(backup_file("copy.sqlite").c_str(), &st), 0);
  EXPECT_TRUE(S_ISREG(st.st_mode)) << "the symlink was not replaced";
  EXPECT_EQ(query_text(backup_file("copy.sqlite"), "SELECT count(*) FROM t"), "1");
}

TEST_F(AdminTest, ASymlinkAtTheTemporaryNameIsNotFollowed) {
  ASSERT_NO_FATAL_FAILURE(start_daemon());
  create_table();
  const std::string victim = dir_.file("victim");
  { std::ofstream(victim) << "precious"; }
  ASSERT_EQ(::mkdir(backups().c_str(), 0750), 0);
  const std::string tmp =
      backup_file(".copy.sqlite." + std::to_string(daemon_.pid()) + ".pasyn-tmp");
  ASSERT_EQ(::symlink(victim.c_str(), tmp.c_str()), 0);
  auto client = connect_client();
  client.execute("INSERT INTO t (b) VALUES (1)");
  const std::string got = outcome_of([&] { client.backup("copy.sqlite"); });
  EXPECT_EQ(read_file(victim), "precious") << got;
  EXPECT_EQ(got, "ok");
  EXPECT_EQ(query_text(backup_file("copy.sqlite"), "SELECT count(*) FROM t"), "1");
  EXPECT_FALSE(path_exists(tmp));
}

// The temporary file of a backup whose daemon died mid-copy (SIGKILL, power loss) is removed by
// the next backup to that name (probe22: each crash during a backup left a hidden copy of up to
// the database's size). A backup holds an flock on its temporary file while it writes it: one
// whose lock is held (another daemon's backup in progress, in whatever PID namespace) stays, and
// so do another name's and a symlink.
TEST_F(AdminTest, TheTemporaryFilesOfBackupsWhoseDaemonDiedAreRemoved) {
  ASSERT_NO_FATAL_FAILURE(start_daemon());
  create_table();
  ASSERT_EQ(::mkdir(backups().c_str(), 0750), 0);
  const std::string died = backup_file(".copy.sqlite.4000001.pasyn-tmp");
  const std::string busy = backup_file(".copy.sqlite.4000002.pasyn-tmp");
  const std::string other = backup_file(".other.sqlite.4000001.pasyn-tmp");
  const std::string link = backup_file(".copy.sqlite.4000003.pasyn-tmp");
  for (const auto& f : {died, busy, other}) std::ofstream(f) << "partial copy";
  const std::string victim = dir_.file("victim");
  std::ofstream(victim) << "precious";
  ASSERT_EQ(::symlink(victim.c_str(), link.c_str()), 0);
  const int held = ::open(busy.c_str(), O_RDONLY | O_CLOEXEC);
  ASSERT_GE(held, 0);
  ASSERT_EQ(::flock(held, LOCK_EX), 0);  // a backup in progress
  auto client = connect_client();
  EXPECT_EQ(outcome_of([&] { client.backup("copy.sqlite"); }), "ok");
  ::close(held);
  EXPECT_FALSE(path_exists(died));
  EXPECT_TRUE(path_exists(busy));
  EXPECT_TRUE(path_exists(other));  // another name's: removed by a backup to that name
  struct stat st {};
  EXPECT_EQ(::lstat(link.c_str(), &st), 0);
  EXPECT_EQ(read_file(victim), "precious");
  EXPECT_EQ(query_text(backup_file("copy.sqlite"), "SELECT count(*) FROM t"), "0");
}

// The backup directory's path is resolved when the daemon starts (a --backup-dir that is a
// symlink then is the operator's choice) and each backup follows no symlink on it: a directory
// swapped for a symlink later is refused, and nothing is written where it points (probe40).
TEST_F(AdminTest, ABackupDirectorySwappedForASymlinkAfterStartIsRefused) {
  const std::string real = dir_.file("real-backups");
  const std::string configured = dir_.file("configured-backups");
  ASSERT_EQ(::mkdir(real.c_str(), 0750), 0);
  ASSERT_EQ(::symlink(real.c_str(), configured.c_str()), 0);
  ASSERT_NO_FATAL_FAILURE(start_daemon({"--backup-dir", configured}));
  create_table();
  auto client = connect_client();
  EXPECT_EQ(outcome_of([&] { client.backup("first.sqlite"); }), "ok");
  EXPECT_EQ(query_text(real + "/first.sqlite", "PRAGMA integrity_check"), "ok");

  const std::string elsewhere = dir_.file("elsewhere");
  const std::string moved = dir_.file("real-backups.moved");
  ASSERT_EQ(::mkdir(elsewhere.c_str(), 0750), 0);
  ASSERT_EQ(::rename(real.c_str(), moved.c_str()), 0);
  ASSERT_EQ(::symlink(elsewhere.c_str(), real.c_str()), 0);
  const std::string got = outcome_of([&] { client.backup("second.sqlite"); });
  EXPECT_TRUE(got.starts_with(kRefusedPermission)) << got;
  EXPECT_TRUE(contains(got, "now reached through a symlink")) << got;
  EXPECT_TRUE(tree(elsewhere).empty());
  EXPECT_FALSE(path_exists(moved + "/second.sqlite"));

  ASSERT_EQ(::unlink(real.c_str()), 0);  // put back: backups work again
  ASSERT_EQ(::rename(moved.c_str(), real.c_str()), 0);
  EXPECT_EQ(outcome_of([&] { client.backup("second.sqlite"); }), "ok");
  EXPECT_EQ(query_text(real + "/second.sqlite", "PRAGMA integrity_check"), "ok");
}

// A --backup-dir symlink to a directory still to be made is resolved at start too: the first
// backup makes the directory it names (review23: every backup was refused as "now reached
// through a symlink").
TEST_F(AdminTest, ABackupDirSymlinkToADirectoryStillToBeMadeIsFollowedFromTheStart) {
  const std::string target = dir_.file("later-backups");
  const std::string configured = dir_.file("backups-link");
  ASSERT_EQ(::symlink(target.c_str(), configured.c_str()), 0);
  ASSERT_NO_FATAL_FAILURE(start_daemon({"--backup-dir", configured}));
  create_table();
  auto client = connect_client();
  EXPECT_EQ(outcome_of([&] { client.backup("copy.sqlite"); }), "ok");
  EXPECT_EQ(query_text(target + "/copy.sqlite", "PRAGMA integrity_check"), "ok");
}

TEST_F(AdminTest, ASymlinkedBackupDirectoryEntryToTheDatabaseCannotOverwriteIt) {
  // A name that is a symlink to the live database: replaced, the database untouched.
  ASSERT_NO_FATAL_FAILURE(start_daemon());
  create_table();
  auto client = connect_client();
  client.execute("INSERT INTO t (b) VALUES (1)");
  ASSERT_EQ(::mkdir(backups().c_str(), 0750), 0);
  ASSERT_EQ(::symlink(db_.c_str(), backup_file("db.sqlite").c_str()), 0);
  EXPECT_EQ(outcome_of([&] { client.backup("db.sqlite"); }), "ok");
  struct stat st {};
  ASSERT_EQ(::lstat(backup_file("db.sqlite").c_str(), &st), 0);
  EXPECT_TRUE(S_ISREG(st.st_mode)) << "the symlink was not replaced";
  client.execute("INSERT INTO t (b) VALUES (2)");
  EXPECT_EQ(query_int("SELECT count(*) FROM t"), 2);
  EXPECT_EQ(query_text(db_, "PRAGMA integrity_check"), "ok");
}

// ---- A consistent copy while writes go on -------------------------------------------------------

TEST_F(AdminTest, ALargeBackupIsConsistentShowsItsProgressAndDoesNotStopWrites) {
  ASSERT_NO_FATAL_FAILURE(start_daemon());
  create_table();
  auto client = connect_client();
  // About 40 MB: ~10,000 pages, ~40 steps of BackupRunner::kStepPages.
  client.execute(
      "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x+1 FROM c WHERE x < 40000) "
      "INSERT INTO t (b) SELECT randomblob(1000) FROM c");
  EXPECT_EQ(stat_int(client, "backup_pages_total"), -1);
  const std::int64_t committed_before = 40000;

  auto admin = connect_client();
  auto backup = std::async(std::launch::async, [&] { return admin.backup("big.sqlite"); });
  // Writes go on and STATS shows the copy's progress while it runs.
  std::int64_t writes_during_backup = 0, progress_seen = 0, total_seen = 0;
  while (backup.wait_for(0s) != std::future_status::ready) {
    client.execute("INSERT INTO t (b) VALUES (x'00')");
    const auto report = client.stats();
    const auto done = as_int(figure(report, "backup_pages_done"));
    const auto total = as_int(figure(report, "backup_pages_total"));
    if (total > 0 && done < total) {
      ++writes_during_backup;  // acknowledged while the copy was still running
      if (done > 0) ++progress_seen;
      total_seen = total;
    }
  }
  const auto report = backup.get();
  const std::int64_t committed_after = query_int("SELECT count(*) FROM t");
  EXPECT_GT(writes_during_backup, 0) << "no write was answered while the backup ran";
  EXPECT_GT(progress_seen, 0) << "STATS never showed the backup part-way";
  EXPECT_EQ(total_seen, as_int(figure(report, "pages")));
  EXPECT_EQ(stat_int(client, "backup_pages_done"), -1);
  EXPECT_EQ(stat_int(client, "backup_pages_total"), -1);

  // One snapshot: the rows are a prefix of the (sequential) inserts, between the counts
  // committed before it started and after it ended.
  const std::string copy = backup_file("big.sqlite");
  EXPECT_EQ(query_text(copy, "PRAGMA integrity_check"), "ok");
  const std::int64_t rows = std::stoll(query_text(copy, "SELECT count(*) FROM t"));
  EXPECT_GE(rows, committed_before);
  EXPECT_LE(rows, committed_after);
  EXPECT_EQ(query_text(copy, "SELECT max(id) FROM t"), std::to_string(rows));
}

TEST_F(AdminTest, OneBackupAtATime) {
  ASSERT_NO_FATAL_FAILURE(start_daemon());
  create_table();
  auto client = connect_client();
  client.execute(
      "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x+1 FROM c WHERE x < 40000) "
      "INSERT INTO t (b) SELECT randomblob(1000) FROM c");
  auto admin = connect_client();
  auto first = std::async(std::launch::async, [&] { return admin.backup("first.sqlite"); });
  ASSERT_TRUE(eventually([&] { return stat_int(client, "backup_pages_total") > 0; }, 20s));
  const std::string second = outcome_of([&] { client.backup("second.sqlite"); });
  const bool first_still_running = stat_int(client, "backup_pages_total") > 0;
  first.get();
  if (first_still_running) {
    EXPECT_NE(second.find("running already"), std::string::npos) << second;
    EXPECT_FALSE(path_exists(backup_file("second.sqlite")));
  }
  EXPECT_EQ(query_text(backup_file("first.sqlite"), "PRAGMA integrity_check"), "ok");
}

}  // namespace
