// Integration tests of the writer connection's SQL allow-list, the roles, and idempotency keys
// scoped by uid and bound to their request (SECURITY.md; PROTOCOL.md §3, §6.3), against the real
// pasyn-writerd binary.
#include <grp.h>
#include <poll.h>
#include <pwd.h>
#include <signal.h>
#include <sqlite3.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <functional>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "../sanitizers.hpp"
#include "hardening_fixture.hpp"

namespace {

using namespace pasyn::itest;

/// The outcome_of() prefix of MISUSE (→ SQLITE_MISUSE).
const std::string kRefusedMisuse = "ProgrammingError code " + std::to_string(SQLITE_MISUSE) + ":";

/// HardeningTest's daemon and client connected before (`before_`), which the tests also use to
/// send the statements under test.
class AllowListTest : public hardening::HardeningTest {
 protected:
  /// Each statement is refused with PERMISSION.
  void expect_permission(const std::vector<std::string>& statements) {
    for (const auto& sql : statements) {
      const std::string outcome = outcome_of([&] { before_->execute_fetchall(sql); });
      EXPECT_TRUE(outcome.starts_with(kRefusedPermission)) << sql << ": " << outcome;
    }
  }
};

/// Peers of user nobody (the tests run as root; root may become nobody).
class RoleTest : public AllowListTest {
 protected:
  void SetUp() override {
    if (::geteuid() != 0) GTEST_SKIP() << "needs root, to run a client as another user";
#if PASYN_TEST_TSAN
    GTEST_SKIP() << "forks a multi-threaded process: not supported under ThreadSanitizer";
#endif
    const passwd* pw = ::getpwnam("nobody");
    ASSERT_NE(pw, nullptr) << "no user nobody";
    uid_ = pw->pw_uid;
    gid_ = pw->pw_gid;
    ASSERT_EQ(::chmod(dir_.path().c_str(), 0755), 0) << std::strerror(errno);
  }
  AsUser as_nobody(const std::function<void(StepLog&)>& script) {
    return run_as(uid_, gid_, script);
  }
  uid_t uid_ = 0;
  gid_t gid_ = 0;
};

// ---- Pragmas ----------------------------------------------------------------------------------

TEST_F(AllowListTest, AnAdminMayCheckpointThroughThePragma) {
  ASSERT_NO_FATAL_FAILURE(start_with_probe());  // the daemon's own user: an admin
  EXPECT_EQ(outcome_of([&] { before_->execute_fetchall("PRAGMA wal_checkpoint(PASSIVE)"); }), "ok");
}

TEST_F(AllowListTest, PragmasThatSetConnectionStateAreRefusedAndTheWriterIsUnaffected) {
  // The test runs as the daemon's own user, an admin by default: --admin-uid makes it a writer.
  ASSERT_NO_FATAL_FAILURE(start_with_probe({"--foreign-keys", "on", "--admin-uid", "nobody"}));
  before_->execute("CREATE TABLE parent (id INTEGER PRIMARY KEY)");
  before_->execute("CREATE TABLE child (p INTEGER REFERENCES parent (id))");
  expect_permission({"PRAGMA hard_heap_limit=1",
                     "PRAGMA soft_heap_limit=1",
                     "PRAGMA cache_size=10",
                     "PRAGMA mmap_size=1048576",
                     "PRAGMA foreign_keys=OFF",
                     "pragma Foreign_Keys = 0",
                     "PRAGMA case_sensitive_like=1",
                     "PRAGMA recursive_triggers=1",
                     "PRAGMA max_page_count=1",
                     "PRAGMA main.max_page_count=1",
                     "PRAGMA busy_timeout=0",
                     "PRAGMA query_only=1",
                     "PRAGMA synchronous=OFF",
                     "PRAGMA journal_mode=DELETE",
                     "PRAGMA writable_schema=ON",
                     "PRAGMA ignore_check_constraints=1",
                     "PRAGMA trusted_schema=1",
                     "PRAGMA secure_delete=1",
                     "PRAGMA cell_size_check=1",
                     "PRAGMA reverse_unordered_selects=1",
                     "PRAGMA threads=4",
                     "PRAGMA temp_store=MEMORY",
                     "PRAGMA no_such_pragma",
                     "PRAGMA incremental_vacuum",
                     "PRAGMA shrink_memory",
                     "PRAGMA wal_checkpoint",
                     "PRAGMA wal_checkpoint(TRUNCATE)",
                     "PRAGMA cache_size",
                     "PRAGMA temp.table_info(probe)"});
  // The same inside a script and inside a transaction.
  const std::string script = outcome_of([&] {
    before_->executescript("INSERT INTO probe (v) VALUES ('s'); PRAGMA max_page_count=1;");
  });
  EXPECT_TRUE(script.starts_with(kRefusedPermission)) << script;
  {
    auto tx = before_->begin();
    const std::string in_tx = outcome_of([&] { tx.execute("PRAGMA hard_heap_limit=1"); });
    EXPECT_TRUE(in_tx.starts_with(kRefusedPermission)) << in_tx;
    tx.rollback();
  }

  // None of them took effect: big rows still fit (max_page_count, hard_heap_limit), LIKE still
  // ignores case, foreign keys are still enforced.
  for (int i = 0; i < 20; ++i) {
    EXPECT_EQ(before_->execute("INSERT INTO probe (v) VALUES (?)", {std::string(100000, 'x')}), 1);
  }
  EXPECT_EQ(query_int("SELECT count(*) FROM probe WHERE length(v) = 100000"), 20);
  EXPECT_EQ(before_->execute_fetchall("SELECT 'a' LIKE 'A'")[0][0], pasyn::Value(std::int64_t{1}));
  EXPECT_THROW(before_->execute("INSERT INTO child (p) VALUES (42)"), pasyn::IntegrityError);
  EXPECT_EQ(before_->execute_fetchall("PRAGMA foreign_keys")[0][0], pasyn::Value(std::int64_t{1}));
  EXPECT_EQ(query_int("SELECT count(*) FROM probe WHERE v = 's'"), 0);
}

TEST_F(AllowListTest, ListedPragmasRunForAWriter) {
  ASSERT_NO_FATAL_FAILURE(start_with_probe());
  EXPECT_EQ(before_->execute_fetchall("PRAGMA table_info(probe)").size(), 1u);
  EXPECT_EQ(before_->execute_fetchall("PRAGMA main.table_xinfo('probe')").size(), 1u);
  EXPECT_EQ(before_->execute_fetchall("PRAGMA integrity_check")[0][0],
            pasyn::Value(std::string("ok")));
  EXPECT_EQ(before_->execute_fetchall("PRAGMA quick_check(probe)")[0][0],
            pasyn::Value(std::string("ok")));
  EXPECT_TRUE(before_->execute_fetchall("PRAGMA foreign_key_check").empty());
  before_->execute("PRAGMA user_version = 7");
  EXPECT_EQ(query_int("PRAGMA user_version"), 7);
  before_->execute("PRAGMA application_id = 1234");
  EXPECT_EQ(query_int("PRAGMA application_id"), 1234);
  EXPECT_EQ(before_->execute_fetchall("PRAGMA journal_mode=wal")[0][0],
            pasyn::Value(std::string("wal")));
  EXPECT_EQ(before_->execute_fetchall("PRAGMA journal_mode")[0][0],
            pasyn::Value(std::string("wal")));
  before_->execute("PRAGMA optimize");
  for (const char* sql :
       {"PRAGMA data_version", "PRAGMA page_count", "PRAGMA page_size", "PRAGMA freelist_count",
        "PRAGMA schema_version", "PRAGMA compile_options", "PRAGMA database_list",
        "PRAGMA collation_list", "PRAGMA index_list(probe)", "PRAGMA foreign_keys",
        "PRAGMA synchronous", "PRAGMA encoding", "PRAGMA trusted_schema"}) {
    EXPECT_EQ(outcome_of([&] { before_->execute_fetchall(sql); }), "ok") << sql;
  }
  // SPEC §4's promise, which a client can read (probe29: the query was refused).
  EXPECT_EQ(before_->execute_fetchall("PRAGMA trusted_schema")[0][0],
            pasyn::Value(std::int64_t{0}));
  // Default --foreign-keys off, like SQLite's own default.
  EXPECT_EQ(before_->execute_fetchall("PRAGMA foreign_keys")[0][0], pasyn::Value(std::int64_t{0}));
}

TEST_F(AllowListTest, PragmaTableValuedFunctionsFollowTheSameList) {
  ASSERT_NO_FATAL_FAILURE(start_with_probe());
  const auto columns = before_->execute_fetchall("SELECT name FROM pragma_table_info('probe')");
  ASSERT_EQ(columns.size(), 1u);
  EXPECT_EQ(columns[0][0], pasyn::Value(std::string("v")));
  EXPECT_EQ(outcome_of([&] { before_->execute_fetchall("SELECT * FROM pragma_compile_options"); }),
            "ok");
  // (Pragmas without a result, like mmap_size or wal_checkpoint, have no table-valued form.)
  expect_permission({"SELECT * FROM pragma_cache_size", "SELECT * FROM pragma_hard_heap_limit",
                     "SELECT * FROM pragma_busy_timeout", "SELECT * FROM pragma_soft_heap_limit"});
  EXPECT_TRUE(before_->ping());
}

// ---- Objects ----------------------------------------------------------------------------------

TEST_F(AllowListTest, TempObjectsAreRefusedSoNoClientCapturesAnothersStatements) {
  ASSERT_NO_FATAL_FAILURE(start_with_probe());
  expect_permission({
      "CREATE TEMP TRIGGER wipe AFTER INSERT ON probe BEGIN DELETE FROM probe; END",
      "CREATE TEMP TABLE probe (v TEXT)",
      "CREATE TEMPORARY TABLE t (x)",
      "CREATE TABLE temp.t (x)",
      "CREATE TEMP TABLE t AS SELECT 1",
      "CREATE TEMP VIEW v AS SELECT 1",
      "CREATE VIEW temp.v AS SELECT 1",
  });
  auto other = connect_client();
  EXPECT_EQ(other.execute("INSERT INTO probe (v) VALUES ('kept')"), 1);
  EXPECT_EQ(query_int("SELECT count(*) FROM probe WHERE v = 'kept'"), 1);
  EXPECT_EQ(other.execute_fetchall("SELECT count(*) FROM probe")[0][0],
            pasyn::Value(std::int64_t{1}));
}

TEST_F(AllowListTest, OrdinarySchemaChangesStillRun) {
  ASSERT_NO_FATAL_FAILURE(start_with_probe());
  for (const char* sql : {
           "CREATE TABLE a (id INTEGER PRIMARY KEY, v TEXT)",
           "CREATE INDEX a_v ON a (v)",
           "CREATE VIEW av AS SELECT v FROM a",
           "CREATE TRIGGER a_log AFTER INSERT ON a BEGIN INSERT INTO probe (v) VALUES (new.v); END",
           "INSERT INTO a (v) VALUES ('x')",
           "ALTER TABLE a ADD COLUMN w INTEGER",
           "ALTER TABLE a RENAME TO b",
           "ALTER TABLE b RENAME COLUMN w TO z",
           "UPDATE b SET z = 1",
           "DELETE FROM b",
           "ANALYZE",
           "REINDEX",
           "DROP TRIGGER a_log",
           "DROP VIEW av",
           "DROP INDEX a_v",
           "DROP TABLE b",
           "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 5) "
           "SELECT count(*) FROM c",
       }) {
    EXPECT_EQ(outcome_of([&] { before_->execute_fetchall(sql); }), "ok") << sql;
  }
  EXPECT_EQ(query_int("SELECT count(*) FROM probe WHERE v = 'x'"), 1);
}

TEST_F(AllowListTest, TheIdempotencyTableIsOutOfReachOfClientSql) {
  ASSERT_NO_FATAL_FAILURE(start_with_probe());
  before_->execute("INSERT INTO probe (v) VALUES ('keyed')", {}, {.idempotency_key = "secret"});
  ASSERT_EQ(query_int("SELECT count(*) FROM pasyn_idempotency"), 1);
  expect_permission({
      "SELECT * FROM pasyn_idempotency",
      "SELECT count(*) FROM main.PASYN_IDEMPOTENCY",
      "DELETE FROM pasyn_idempotency",
      "UPDATE pasyn_idempotency SET reply = x''",
      "INSERT INTO pasyn_idempotency (uid, key, digest, reply) VALUES (0, 'k', x'00', x'00')",
      "DROP TABLE pasyn_idempotency",
      "ALTER TABLE pasyn_idempotency RENAME TO stolen",
      "CREATE INDEX steal ON pasyn_idempotency (key)",
      "CREATE TRIGGER steal AFTER INSERT ON pasyn_idempotency BEGIN SELECT 1; END",
      "CREATE TABLE pasyn_mine (x)",
  });
  // Through a view or a trigger of the client's: refused when they would run.
  before_->execute("CREATE VIEW peek AS SELECT key FROM pasyn_idempotency");
  expect_permission({"SELECT * FROM peek"});
  before_->execute(
      "CREATE TRIGGER wipe AFTER INSERT ON probe BEGIN DELETE FROM pasyn_idempotency; END");
  expect_permission({"INSERT INTO probe (v) VALUES ('fires')"});
  EXPECT_EQ(query_int("SELECT count(*) FROM pasyn_idempotency"), 1);
}

// SQLite shows the authorizer only the old name of ALTER TABLE ... RENAME. Before the daemon
// first made pasyn_idempotency, a client could rename a table of its own, with forged replies
// for other clients' keys, into that name (a probe: a keyed INSERT answered "42 changes" that
// wrote nothing).
TEST_F(AllowListTest, NoTableCanBeRenamedIntoTheDaemonsNames) {
  ASSERT_NO_FATAL_FAILURE(start_with_probe());
  before_->execute(
      "CREATE TABLE planted (id INTEGER PRIMARY KEY, uid INTEGER NOT NULL, key TEXT NOT NULL, "
      "digest BLOB NOT NULL, reply BLOB NOT NULL, UNIQUE (uid, key))");
  before_->execute("CREATE VIRTUAL TABLE docs USING fts5 (body)");
  expect_permission({
      "ALTER TABLE planted RENAME TO pasyn_idempotency",
      "ALTER TABLE planted RENAME TO \"PASYN_Other\"",
      "ALTER TABLE docs RENAME TO pasyn",  // its shadow tables would become pasyn_data, ...
  });
  const std::string script = outcome_of([&] {
    before_->executescript(
        "INSERT INTO probe (v) VALUES ('script'); "
        "ALTER TABLE planted RENAME TO pasyn_idempotency;");
  });
  EXPECT_TRUE(script.starts_with(kRefusedPermission)) << script;
  {
    auto tx = before_->begin();
    tx.execute("INSERT INTO probe (v) VALUES ('tx')");
    const std::string in_tx =
        outcome_of([&] { tx.execute("ALTER TABLE planted RENAME TO pasyn_idempotency"); });
    EXPECT_TRUE(in_tx.starts_with(kRefusedPermission)) << in_tx;
    tx.commit();  // the refusal undid only itself
  }
  EXPECT_EQ(query_int("SELECT count(*) FROM sqlite_schema WHERE name LIKE 'pasyn%'"), 0);
  EXPECT_EQ(query_int("SELECT count(*) FROM probe WHERE v IN ('script', 'tx')"), 1);
  // The daemon makes its own table on the first key, and every other rename still runs.
  EXPECT_EQ(
      before_->execute("INSERT INTO probe (v) VALUES ('keyed')", {}, {.idempotency_key = "k1"}), 1);
  EXPECT_EQ(query_int("SELECT count(*) FROM pasyn_idempotency"), 1);
  EXPECT_EQ(outcome_of([&] { before_->execute("ALTER TABLE planted RENAME TO kept"); }), "ok");
  EXPECT_EQ(outcome_of([&] { before_->execute("ALTER TABLE docs RENAME TO notes"); }), "ok");
  expect_permission({"ALTER TABLE kept RENAME TO pasyn_idempotency2"});
  EXPECT_EQ(query_int("SELECT count(*) FROM sqlite_schema WHERE name LIKE 'pasyn%'"), 1);

  // A pasyn_ table made behind the daemon's back (an operator's sqlite3 shell) does not make
  // every later ALTER TABLE look like a rename into the reserved names (a review's point).
  {
    sqlite3* db = nullptr;
    ASSERT_EQ(sqlite3_open(db_.c_str(), &db), SQLITE_OK);
    sqlite3_busy_timeout(db, 5000);
    EXPECT_EQ(sqlite3_exec(db, "CREATE TABLE pasyn_operator (x)", nullptr, nullptr, nullptr),
              SQLITE_OK)
        << sqlite3_errmsg(db);
    sqlite3_close(db);
  }
  EXPECT_EQ(outcome_of([&] { before_->execute("ALTER TABLE kept RENAME TO kept2"); }), "ok");
  EXPECT_EQ(outcome_of([&] { before_->execute("ALTER TABLE kept2 RENAME TO kept3"); }), "ok");
  expect_permission({"ALTER TABLE kept3 RENAME TO pasyn_idempotency2"});
  expect_still_served();
}

// fts3_tokenizer() returns a pointer into the daemon, or with two arguments installs a client's
// bytes as a tokenizer's function table, which the next FTS3 query calls (a probe crashed the
// daemon with it, also from a read-only peer: the call is a SELECT).
TEST_F(AllowListTest, Fts3TokenizerIsRefused) {
  ASSERT_NO_FATAL_FAILURE(start_with_probe());
  before_->execute("CREATE VIRTUAL TABLE docs USING fts3 (body)");
  before_->execute("INSERT INTO docs (body) VALUES ('hello world')");
  for (const char* sql : {"SELECT hex(fts3_tokenizer('simple'))",
                          "SELECT FTS3_TOKENIZER('simple', x'4141414141414141')",
                          "SELECT fts3_tokenizer('evil', x'4141414141414141')"}) {
    const std::string outcome = outcome_of([&] { before_->execute_fetchall(sql); });
    EXPECT_TRUE(outcome.starts_with(kRefusedPermission)) << sql << ": " << outcome;
    EXPECT_TRUE(contains(outcome, "fts3_tokenizer() is not allowed")) << outcome;
  }
  EXPECT_EQ(before_->execute_fetchall("SELECT count(*) FROM docs WHERE docs MATCH 'hello'")[0][0],
            pasyn::Value(std::int64_t{1}));
  expect_still_served();
}

// sqlite_stmt (SQLITE_ENABLE_STMTVTAB, in Debian's SQLite) lists the statements prepared on the
// shared writer connection: every client's, with their literal values (probe14 read another
// client's password from a rolled-back INSERT).
TEST_F(AllowListTest, OtherClientsStatementsCannotBeReadThroughSqliteStmt) {
  ASSERT_NO_FATAL_FAILURE(start_with_probe());
  before_->execute("INSERT INTO probe (v) VALUES ('hunter2')");
  for (const char* sql :
       {"SELECT sql FROM sqlite_stmt", "SELECT count(*) FROM main.SQLITE_STMT",
        "SELECT * FROM (SELECT sql FROM sqlite_stmt WHERE sql LIKE '%hunter2%')"}) {
    const std::string outcome = outcome_of([&] { before_->execute_fetchall(sql); });
    EXPECT_TRUE(outcome.starts_with(kRefusedPermission)) << sql << ": " << outcome;
    EXPECT_TRUE(contains(outcome, "sqlite_stmt is not readable")) << outcome;
  }
  expect_still_served();
}

// dbstat (SQLITE_ENABLE_DBSTAT_VTAB, in Debian's SQLite) reports every b-tree's pages, cells and
// payload bytes, the daemon's pasyn_idempotency too: how many keys every uid has used (probe40).
// The writer connection has no such module: not by name, not as a table-valued function, not
// as a table of its module made by a direct connection (review23), and none can be made; a
// plain table named dbstat is the client's own.
TEST_F(AllowListTest, DbstatCannotDescribeTheDaemonsTables) {
  ASSERT_NO_FATAL_FAILURE(start_with_probe());
  {
    sqlite3* db = nullptr;
    ASSERT_EQ(sqlite3_open(db_.c_str(), &db), SQLITE_OK);
    sqlite3_busy_timeout(db, 5000);
    ASSERT_EQ(sqlite3_exec(db, "CREATE VIRTUAL TABLE pages USING dbstat(main)", nullptr, nullptr,
                           nullptr),
              SQLITE_OK)
        << sqlite3_errmsg(db);
    sqlite3_close(db);
  }
  for (const char* sql : {"SELECT name, ncell FROM dbstat WHERE name LIKE 'pasyn%'",
                          "SELECT count(*) FROM main.DBSTAT",
                          "SELECT * FROM dbstat('main') WHERE name = 'pasyn_idempotency'",
                          "SELECT name, ncell FROM pages"}) {
    const std::string outcome = outcome_of([&] { before_->execute_fetchall(sql); });
    EXPECT_TRUE(outcome.starts_with("OperationalError code 1:")) << sql << ": " << outcome;
    EXPECT_TRUE(contains(outcome, "no such")) << sql << ": " << outcome;
  }
  const std::string made =
      outcome_of([&] { before_->execute("CREATE VIRTUAL TABLE pages2 USING dbstat(main)"); });
  EXPECT_TRUE(made.starts_with(kRefusedPermission)) << made;
  EXPECT_TRUE(contains(made, "dbstat is not available")) << made;
  before_->executescript("CREATE TABLE dbstat (x); INSERT INTO dbstat VALUES (1)");
  EXPECT_EQ(before_->execute_fetchall("SELECT x FROM dbstat")[0][0], pasyn::Value(std::int64_t{1}));
  expect_still_served();
}

// VACUUM INTO takes an expression, whose reads SQLite authorizes when it prepares the statement:
// they are the client's, not VACUUM's own (review19: prepared in VACUUM's mode, a subquery there
// read sqlite_stmt and the daemon's tables, one bit per request). VACUUM itself still runs, and
// after a schema change too (its cached statement would be prepared again inside the step).
TEST_F(AllowListTest, AVacuumIntoExpressionReadsOnlyWhatTheClientMay) {
  ASSERT_NO_FATAL_FAILURE(start_with_probe());
  before_->execute("INSERT INTO probe (v) VALUES ('hunter2')");
  before_->execute("INSERT INTO probe (v) VALUES ('keyed')", {}, {.idempotency_key = "k"});
  for (const char* sql :
       {"VACUUM INTO (SELECT CASE WHEN (SELECT count(*) FROM sqlite_stmt) >= 0 THEN '' ELSE 'x' "
        "END)",
        "VACUUM INTO (SELECT CASE WHEN (SELECT count(*) FROM pasyn_idempotency) >= 0 THEN '' "
        "ELSE 'x' END)"}) {
    for (int i = 0; i < 2; ++i) {
      const std::string outcome = outcome_of([&] { before_->execute(sql); });
      EXPECT_TRUE(outcome.starts_with(kRefusedPermission)) << sql << ": " << outcome;
      before_->execute("CREATE TABLE IF NOT EXISTS churn" + std::to_string(i) + " (x)");
    }
  }
  EXPECT_EQ(outcome_of([&] { before_->execute("VACUUM"); }), "ok");
  before_->execute("CREATE TABLE after_vacuum (x)");
  EXPECT_EQ(outcome_of([&] { before_->execute("VACUUM"); }), "ok");
  expect_still_served();
}

TEST_F(AllowListTest, DefensiveModeRefusesWritingAShadowTable) {
  ASSERT_NO_FATAL_FAILURE(start_with_probe());
  before_->execute("CREATE VIRTUAL TABLE docs USING fts5 (body)");
  before_->execute("INSERT INTO docs (body) VALUES ('hello world')");
  // Allowed by the allow-list (a table of the main database), refused by SQLITE_DBCONFIG_DEFENSIVE:
  // writing an FTS5 shadow table directly could corrupt the index.
  for (const char* sql : {"DELETE FROM docs_data", "INSERT INTO docs_data VALUES (99, x'00')",
                          "UPDATE docs_content SET c0 = 'x'"}) {
    const std::string outcome = outcome_of([&] { before_->execute(sql); });
    EXPECT_TRUE(contains(outcome, "may not be modified")) << sql << ": " << outcome;
  }
  EXPECT_EQ(before_->execute_fetchall("SELECT count(*) FROM docs WHERE docs MATCH 'hello'")[0][0],
            pasyn::Value(std::int64_t{1}));
}

TEST_F(AllowListTest, ExtensionsCannotBeLoaded) {
  ASSERT_NO_FATAL_FAILURE(start_with_probe());
  // Refused with PERMISSION like every other action off the allow-list (SPEC §4), in any case
  // and in a script.
  for (const char* sql : {"SELECT load_extension('/lib/x/libc.so.6')",
                          "SELECT LOAD_EXTENSION('/lib/x/libc.so.6', 'f')",
                          "INSERT INTO probe (v) VALUES (load_extension('x'))"}) {
    const std::string outcome = outcome_of([&] { before_->execute_fetchall(sql); });
    EXPECT_TRUE(outcome.starts_with(kRefusedPermission)) << sql << ": " << outcome;
    EXPECT_TRUE(contains(outcome, "load_extension() is not allowed")) << outcome;
  }
  const std::string script =
      outcome_of([&] { before_->executescript("SELECT 1; SELECT load_extension('x');"); });
  EXPECT_TRUE(script.starts_with(kRefusedPermission)) << script;
  EXPECT_TRUE(before_->ping());
}

TEST_F(AllowListTest, TheDaemonsSavepointNameIsReservedInAnyCase) {
  ASSERT_NO_FATAL_FAILURE(start_with_probe());
  auto tx = before_->begin();
  for (const char* sql : {"SAVEPOINT pasyn_request", "SAVEPOINT PASYN_REQUEST",
                          "RELEASE Pasyn_Request", "ROLLBACK TO pasyn_REQUEST"}) {
    const std::string outcome = outcome_of([&] { tx.execute(sql); });
    EXPECT_TRUE(outcome.starts_with(kRefusedMisuse)) << sql << ": " << outcome;
  }
  tx.execute("SAVEPOINT mine");
  tx.execute("INSERT INTO probe (v) VALUES ('in')");
  tx.execute("RELEASE mine");
  tx.commit();
  // A savepoint statement prepared inside a transaction is not reused outside one.
  const std::string outside = outcome_of([&] { before_->execute("SAVEPOINT mine"); });
  EXPECT_TRUE(outside.starts_with(kRefusedMisuse)) << outside;
  EXPECT_EQ(query_int("SELECT count(*) FROM probe WHERE v = 'in'"), 1);
}

// ---- --foreign-keys ---------------------------------------------------------------------------

TEST_F(AllowListTest, ForeignKeysOnEnforcesThemAndTheDefaultDoesNot) {
  for (const bool on : {true, false}) {
    SCOPED_TRACE(on ? "--foreign-keys on" : "default");
    ASSERT_NO_FATAL_FAILURE(start_daemon(on ? std::vector<std::string>{"--foreign-keys", "on"}
                                            : std::vector<std::string>{}));
    {
      auto c = connect_client();
      c.execute("CREATE TABLE IF NOT EXISTS parent (id INTEGER PRIMARY KEY)");
      c.execute("CREATE TABLE IF NOT EXISTS child (p INTEGER REFERENCES parent (id))");
      const std::string outcome = outcome_of([&] { c.execute("INSERT INTO child VALUES (7)"); });
      if (on) {
        EXPECT_TRUE(outcome.starts_with("IntegrityError")) << outcome;
      } else {
        EXPECT_EQ(outcome, "ok");
      }
    }
    stop_daemon();
  }
}

TEST(InProcessServer, ServerOptionsForeignKeysEnforcesThem) {
  TempDir dir;
  pasyn::ServerOptions options;
  options.socket_path = dir.file("s.sock");
  options.foreign_keys = true;
  auto server = pasyn::start_writer_server(dir.file("db.sqlite"), options);
  pasyn::MultiplexedClient c(options.socket_path);
  c.execute("CREATE TABLE parent (id INTEGER PRIMARY KEY)");
  c.execute("CREATE TABLE child (p INTEGER REFERENCES parent (id))");
  EXPECT_THROW(c.execute("INSERT INTO child VALUES (7)"), pasyn::IntegrityError);
  const std::string refused = outcome_of([&] { c.execute("PRAGMA foreign_keys = OFF"); });
  EXPECT_TRUE(refused.starts_with(kRefusedPermission)) << refused;
  EXPECT_THROW(c.execute("INSERT INTO child VALUES (7)"), pasyn::IntegrityError);
}

// ---- Roles ------------------------------------------------------------------------------------

/// Every byte of the database and its WAL.
std::string database_bytes(const std::string& db) { return read_file(db) + read_file(db + "-wal"); }

TEST_F(RoleTest, AReadOnlyPeerChangesNothingNotEvenWithAKeyOrAPragma) {
  ASSERT_NO_FATAL_FAILURE(start_with_probe({"--socket-mode", "0666", "--read-only-uid", "nobody"}));
  before_->execute("INSERT INTO probe (v) VALUES ('visible')");
  before_->execute("PRAGMA user_version = 3");
  const std::string before = database_bytes(db_);
  const std::string sock = sock_;
  const auto nobody = as_nobody([sock](StepLog& log) {
    std::optional<pasyn::MultiplexedClient> client;
    log.run("connect", [&] { client.emplace(sock, bounded_options()); });
    if (!client) return;
    auto& c = *client;
    log.run("select", [&] { c.execute_fetchall("SELECT v FROM probe"); });
    log.run("pragma query", [&] { c.execute_fetchall("PRAGMA user_version"); });
    log.run("table_info", [&] { c.execute_fetchall("SELECT * FROM pragma_table_info('probe')"); });
    log.run("keyed select", [&] { c.execute("SELECT 1", {}, {.idempotency_key = "ro"}); });
    log.run("keyed insert", [&] {
      c.execute("INSERT INTO probe (v) VALUES ('x')", {}, {.idempotency_key = "ro2"});
    });
    log.run("set user_version", [&] { c.execute("PRAGMA user_version = 9"); });
    log.run("set cache_size", [&] { c.execute_fetchall("PRAGMA cache_size = 10"); });
    log.run("optimize", [&] { c.execute_fetchall("PRAGMA optimize"); });
    log.run("journal_mode wal", [&] { c.execute_fetchall("PRAGMA journal_mode = WAL"); });
    log.run("vacuum", [&] { c.execute("VACUUM"); });
    log.run("temp table", [&] { c.execute("CREATE TEMP TABLE t (x)"); });
    log.run("fts3_tokenizer",
            [&] { c.execute_fetchall("SELECT fts3_tokenizer('simple', x'4141414141414141')"); });
    log.run("ping after", [&] { c.ping(); });
  });
  for (const char* allowed : {"connect", "select", "pragma query", "table_info", "ping after"}) {
    EXPECT_EQ(nobody[allowed], "ok") << allowed;
  }
  for (const char* refused :
       {"keyed select", "keyed insert", "set user_version", "set cache_size", "optimize",
        "journal_mode wal", "vacuum", "temp table", "fts3_tokenizer"}) {
    EXPECT_TRUE(nobody[refused].starts_with(kRefusedPermission))
        << refused << ": " << nobody[refused];
  }
  EXPECT_EQ(database_bytes(db_), before) << "a read-only peer changed the database";
  EXPECT_EQ(query_int("PRAGMA user_version"), 3);
  EXPECT_TRUE(before_->ping());
}

TEST_F(RoleTest, AKeyBelongsToItsUidAndToItsRequest) {
  ASSERT_NO_FATAL_FAILURE(start_with_probe({"--socket-mode", "0666"}));
  const pasyn::WriteOptions key{.idempotency_key = "shared-name"};
  const std::string insert = "INSERT INTO probe (v) VALUES (?)";
  const pasyn::Params root{std::string("root")};
  EXPECT_EQ(before_->execute(insert, root, key), 1);
  EXPECT_EQ(before_->execute(insert, root, key), 1);  // replayed
  EXPECT_EQ(query_int("SELECT count(*) FROM probe WHERE v = 'root'"), 1);

  // Another uid, the same key and the very same request: its own write, not root's reply.
  const std::string sock = sock_;
  const auto nobody = as_nobody([&](StepLog& log) {
    std::optional<pasyn::MultiplexedClient> client;
    log.run("connect", [&] { client.emplace(sock, bounded_options()); });
    if (!client) return;
    log.run("first", [&] { client->execute(insert, root, key); });
    log.run("retry", [&] { client->execute(insert, root, key); });
  });
  EXPECT_EQ(nobody["first"], "ok");
  EXPECT_EQ(nobody["retry"], "ok");
  EXPECT_EQ(query_int("SELECT count(*) FROM probe WHERE v = 'root'"), 2);

  // The same uid and key with another request: MISUSE, nothing run.
  // (A pair, not a structured binding: clang 14 cannot capture those in the lambda.)
  for (const auto& request : std::vector<std::pair<std::string, pasyn::Params>>{
           {insert, {std::string("other")}}, {"INSERT INTO probe (v) VALUES ('root')", {}}}) {
    const std::string outcome =
        outcome_of([&] { before_->execute(request.first, request.second, key); });
    EXPECT_TRUE(outcome.starts_with(kRefusedMisuse)) << request.first << ": " << outcome;
  }
  const std::string many = outcome_of([&] { before_->execute_many(insert, {root}, key); });
  EXPECT_TRUE(many.starts_with(kRefusedMisuse)) << many;
  EXPECT_EQ(query_int("SELECT count(*) FROM probe WHERE v = 'other'"), 0);
  EXPECT_EQ(query_int("SELECT count(*) FROM probe WHERE v = 'root'"), 2);
}

TEST_F(AllowListTest, AVersion1KeyTableIsReplacedAtOpen) {
  {  // A database left by a daemon of protocol version 1, with a recorded key.
    sqlite3* db = nullptr;
    ASSERT_EQ(sqlite3_open(db_.c_str(), &db), SQLITE_OK);
    ASSERT_EQ(sqlite3_exec(db,
                           "CREATE TABLE probe (v TEXT);"
                           "CREATE TABLE pasyn_idempotency (id INTEGER PRIMARY KEY, key TEXT NOT "
                           "NULL UNIQUE, reply BLOB NOT NULL);"
                           "INSERT INTO pasyn_idempotency (key, reply) VALUES ('old', x'0f');",
                           nullptr, nullptr, nullptr),
              SQLITE_OK);
    sqlite3_close(db);
  }
  ASSERT_NO_FATAL_FAILURE(start_daemon());
  auto c = connect_client();
  // Not answered with the unattributable old record: it runs.
  EXPECT_EQ(c.execute("INSERT INTO probe (v) VALUES ('new')", {}, {.idempotency_key = "old"}), 1);
  EXPECT_EQ(query_int("SELECT count(*) FROM probe WHERE v = 'new'"), 1);
  EXPECT_EQ(query_int("SELECT count(*) FROM pragma_table_info('pasyn_idempotency') "
                      "WHERE name IN ('uid', 'digest')"),
            2);
  EXPECT_EQ(query_int("SELECT count(*) FROM pasyn_idempotency"), 1);
}

}  // namespace
