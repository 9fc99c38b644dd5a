// Tests for pasyn::Connection (libclient/src/connection.cpp) against real database files.
#include <pasyn/connection.hpp>

#include <gtest/gtest.h>

#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <limits>
#include <optional>
#include <stdexcept>
#include <string>
#include <system_error>
#include <utility>
#include <variant>
#include <vector>

namespace {

using pasyn::Blob;
using pasyn::Connection;
using pasyn::OpenFlags;
using pasyn::Row;
using pasyn::Value;

// SQLite result codes, spelled out so the tests need only the public headers.
constexpr int kSqliteError = 1;
constexpr int kSqliteReadOnly = 8;
constexpr int kSqliteCantOpen = 14;
constexpr int kSqliteConstraint = 19;
constexpr int kSqliteMisuse = 21;
constexpr int kSqliteRange = 25;
constexpr int kSqliteConstraintUnique = 2067;

// A fresh directory under /tmp for each test, removed with everything in it afterwards.
class TempDir {
 public:
  TempDir() {
    std::string pattern = "/tmp/pasyn-connection-test-XXXXXX";
    if (mkdtemp(pattern.data()) == nullptr) throw std::runtime_error("mkdtemp failed");
    path_ = pattern;
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  ~TempDir() {
    std::error_code ignored;
    std::filesystem::remove_all(path_, ignored);
  }
  std::string file(const std::string& name) const { return (path_ / name).string(); }

 private:
  std::filesystem::path path_;
};

class ConnectionTest : public ::testing::Test {
 protected:
  std::string db_path() const { return dir_.file("test.db"); }

  TempDir dir_;
};

std::int64_t count_rows(Connection& conn, const std::string& table) {
  const auto row = conn.execute_fetchone("SELECT count(*) FROM " + table);
  return std::get<std::int64_t>(row.value().at(0));
}

TEST_F(ConnectionTest, RoundTripsEveryValueType) {
  Connection conn = pasyn::connect(db_path());
  conn.execute("CREATE TABLE t(id INTEGER PRIMARY KEY, v)");
  const std::vector<Value> values = {
      nullptr,
      std::int64_t{0},
      std::numeric_limits<std::int64_t>::min(),
      std::numeric_limits<std::int64_t>::max(),
      1.5,
      -2.25e300,
      std::string(),
      std::string("h\xc3\xa9llo"),
      std::string("a\0b", 3),
      Blob(),
      Blob{0x00, 0x01, 0xff},
  };
  for (const Value& v : values) conn.execute("INSERT INTO t(v) VALUES (?)", {v});

  const auto rows = conn.execute_fetchall("SELECT v, typeof(v) FROM t ORDER BY id");
  ASSERT_EQ(rows.size(), values.size());
  for (std::size_t i = 0; i < values.size(); ++i) {
    SCOPED_TRACE("value #" + std::to_string(i));
    EXPECT_EQ(rows[i].at(0), values[i]);
  }
  // Empty text, empty blob and NULL stay three different things in the database too.
  EXPECT_EQ(rows[0].at(1), Value("null"));
  EXPECT_EQ(rows[6].at(1), Value("text"));
  EXPECT_EQ(rows[9].at(1), Value("blob"));
}

TEST_F(ConnectionTest, ValuesConvertFromBraceListsAsDocumented) {
  Connection conn = pasyn::connect(db_path());
  const auto row = conn.execute_fetchone("SELECT typeof(?), typeof(?), typeof(?), typeof(?)",
                                         {nullptr, 42, 0.5, "text"});
  ASSERT_TRUE(row.has_value());
  EXPECT_EQ(*row, (Row{"null", "integer", "real", "text"}));
}

TEST_F(ConnectionTest, ParameterCountMismatchIsProgrammingError) {
  Connection conn = pasyn::connect(db_path());
  conn.execute("CREATE TABLE t(a, b)");
  try {
    conn.execute("INSERT INTO t VALUES (?, ?)", {1});
    FAIL() << "expected ProgrammingError";
  } catch (const pasyn::ProgrammingError& e) {
    EXPECT_EQ(e.code(), kSqliteRange);
    const std::string message = e.what();
    EXPECT_NE(message.find('2'), std::string::npos) << message;
    EXPECT_NE(message.find('1'), std::string::npos) << message;
  }
  EXPECT_THROW(conn.execute("INSERT INTO t VALUES (?, ?)", {1, 2, 3}), pasyn::ProgrammingError);
  EXPECT_THROW(conn.execute_fetchall("SELECT 1", {1}), pasyn::ProgrammingError);
  EXPECT_THROW(conn.execute_fetchone("SELECT ?"), pasyn::ProgrammingError);
  EXPECT_EQ(count_rows(conn, "t"), 0);
}

TEST_F(ConnectionTest, MoreThanOneStatementIsProgrammingErrorAndRunsNothing) {
  Connection conn = pasyn::connect(db_path());
  conn.execute("CREATE TABLE t(a)");
  try {
    conn.execute("INSERT INTO t VALUES (1); INSERT INTO t VALUES (2)");
    FAIL() << "expected ProgrammingError";
  } catch (const pasyn::ProgrammingError& e) {
    EXPECT_EQ(e.code(), kSqliteMisuse);
  }
  EXPECT_THROW(conn.execute_fetchall("SELECT 1; SELECT 2"), pasyn::ProgrammingError);
  EXPECT_THROW(conn.execute_fetchone("SELECT 1; x"), pasyn::ProgrammingError);
  EXPECT_EQ(count_rows(conn, "t"), 0);
}

TEST_F(ConnectionTest, TrailingCommentsAndSemicolonsAreNotAnotherStatement) {
  Connection conn = pasyn::connect(db_path());
  EXPECT_EQ(conn.execute_fetchone("SELECT 1; -- one\n /* two */ ;\n\t")->at(0), Value(1));
  EXPECT_EQ(conn.execute_fetchone("SELECT 2 -- unterminated line comment")->at(0), Value(2));
  EXPECT_EQ(conn.execute_fetchone("SELECT 3 /* unterminated block comment")->at(0), Value(3));
}

TEST_F(ConnectionTest, EmptySqlRunsNothing) {
  Connection conn = pasyn::connect(db_path());
  EXPECT_EQ(conn.execute(""), 0);
  EXPECT_EQ(conn.execute("  -- only a comment\n"), 0);
  EXPECT_TRUE(conn.execute_fetchall("/* nothing */").empty());
  EXPECT_FALSE(conn.execute_fetchone(" ").has_value());
  conn.executescript("");
}

TEST_F(ConnectionTest, SyntaxErrorIsOperationalErrorWithCodeOne) {
  Connection conn = pasyn::connect(db_path());
  try {
    conn.execute("SELEKT 1");
    FAIL() << "expected OperationalError";
  } catch (const pasyn::OperationalError& e) {
    EXPECT_EQ(e.code(), kSqliteError);
    EXPECT_EQ(e.extended_code(), kSqliteError);
    EXPECT_NE(std::string(e.what()).find("syntax error"), std::string::npos) << e.what();
  }
}

TEST_F(ConnectionTest, UniqueViolationIsIntegrityErrorWithExtendedCode) {
  Connection conn = pasyn::connect(db_path());
  conn.execute("CREATE TABLE t(a UNIQUE)");
  conn.execute("INSERT INTO t VALUES (1)");
  try {
    conn.execute("INSERT INTO t VALUES (1)");
    FAIL() << "expected IntegrityError";
  } catch (const pasyn::IntegrityError& e) {
    EXPECT_EQ(e.code(), kSqliteConstraint);
    EXPECT_EQ(e.extended_code(), kSqliteConstraintUnique);
  }
  EXPECT_EQ(count_rows(conn, "t"), 1);
}

TEST_F(ConnectionTest, ReadOnlyConnectionRejectsWrites) {
  pasyn::connect(db_path()).execute("CREATE TABLE t(a)");
  Connection reader = pasyn::connect(db_path(), OpenFlags::readonly());
  try {
    reader.execute("INSERT INTO t VALUES (1)");
    FAIL() << "expected OperationalError";
  } catch (const pasyn::OperationalError& e) {
    EXPECT_EQ(e.code(), kSqliteReadOnly);
  }
  EXPECT_EQ(count_rows(reader, "t"), 0);
}

TEST_F(ConnectionTest, OpeningMissingFileReadOnlyIsOperationalError) {
  const std::string missing = dir_.file("missing.db");
  try {
    pasyn::connect(missing, OpenFlags::readonly());
    FAIL() << "expected OperationalError";
  } catch (const pasyn::OperationalError& e) {
    EXPECT_EQ(e.code(), kSqliteCantOpen);
  }
  EXPECT_THROW(pasyn::connect(missing, OpenFlags::readwrite()), pasyn::OperationalError);
  EXPECT_FALSE(std::filesystem::exists(missing));
}

TEST_F(ConnectionTest, DefaultFlagsCreateTheFile) {
  Connection conn = pasyn::connect(db_path());
  conn.execute("CREATE TABLE t(a)");
  EXPECT_TRUE(std::filesystem::exists(db_path()));
  EXPECT_EQ(conn.path(), db_path());
}

TEST_F(ConnectionTest, ReadOnlyCombinedWithCreateIsProgrammingError) {
  EXPECT_THROW(pasyn::connect(db_path(), OpenFlags::readonly() | OpenFlags::create()),
               pasyn::ProgrammingError);
}

TEST_F(ConnectionTest, UseAfterCloseThrowsConnectionClosedError) {
  Connection conn = pasyn::connect(db_path());
  EXPECT_FALSE(conn.closed());
  conn.close();
  EXPECT_TRUE(conn.closed());
  conn.close();  // idempotent
  EXPECT_EQ(conn.path(), db_path());

  EXPECT_THROW(conn.execute("SELECT 1"), pasyn::ConnectionClosedError);
  EXPECT_THROW(conn.execute_fetchall("SELECT 1"), pasyn::ConnectionClosedError);
  EXPECT_THROW(conn.execute_fetchone("SELECT 1"), pasyn::ConnectionClosedError);
  EXPECT_THROW(conn.executescript("SELECT 1"), pasyn::ConnectionClosedError);
  EXPECT_THROW(conn.begin(), pasyn::ConnectionClosedError);
  EXPECT_THROW(conn.commit(), pasyn::ConnectionClosedError);
  EXPECT_THROW(conn.rollback(), pasyn::ConnectionClosedError);
  EXPECT_THROW(conn.in_transaction(), pasyn::ConnectionClosedError);
  EXPECT_THROW(conn.last_column_names(), pasyn::ConnectionClosedError);
  try {
    conn.execute("SELECT 1");
  } catch (const pasyn::ConnectionClosedError& e) {
    EXPECT_STREQ(e.what(), "connection is closed");
  }
}

TEST_F(ConnectionTest, EveryExceptionIsCatchableAsPasynError) {
  Connection conn = pasyn::connect(db_path());
  conn.execute("CREATE TABLE t(a UNIQUE)");
  conn.execute("INSERT INTO t VALUES (1)");
  Connection closed = pasyn::connect(db_path());
  closed.close();

  EXPECT_THROW(conn.execute("SELECT ?"), pasyn::Error);                  // ProgrammingError
  EXPECT_THROW(conn.execute("SELECT 1; SELECT 2"), pasyn::Error);        // ProgrammingError
  EXPECT_THROW(conn.execute("SELEKT 1"), pasyn::Error);                  // OperationalError
  EXPECT_THROW(conn.execute("INSERT INTO t VALUES (1)"), pasyn::Error);  // IntegrityError
  EXPECT_THROW(pasyn::connect(dir_.file("missing.db"), OpenFlags::readonly()), pasyn::Error);
  EXPECT_THROW(closed.execute("SELECT 1"), pasyn::Error);  // ConnectionClosedError
  EXPECT_THROW(conn.execute("INSERT INTO t VALUES (1)"), pasyn::SqliteError);
}

TEST_F(ConnectionTest, RollbackUndoesChangesSinceBegin) {
  Connection conn = pasyn::connect(db_path());
  conn.execute("CREATE TABLE t(a)");
  EXPECT_FALSE(conn.in_transaction());
  conn.begin();
  EXPECT_TRUE(conn.in_transaction());
  conn.execute("INSERT INTO t VALUES (1)");
  EXPECT_EQ(count_rows(conn, "t"), 1);
  conn.rollback();
  EXPECT_FALSE(conn.in_transaction());
  EXPECT_EQ(count_rows(conn, "t"), 0);
}

TEST_F(ConnectionTest, CommitKeepsChangesSinceBegin) {
  Connection conn = pasyn::connect(db_path());
  conn.execute("CREATE TABLE t(a)");
  conn.begin();
  conn.execute("INSERT INTO t VALUES (1)");
  conn.commit();
  EXPECT_FALSE(conn.in_transaction());
  Connection other = pasyn::connect(db_path(), OpenFlags::readonly());
  EXPECT_EQ(count_rows(other, "t"), 1);
}

TEST_F(ConnectionTest, FetchoneOnEmptyResultIsNullopt) {
  Connection conn = pasyn::connect(db_path());
  conn.execute("CREATE TABLE t(a)");
  EXPECT_FALSE(conn.execute_fetchone("SELECT a FROM t").has_value());
  EXPECT_TRUE(conn.execute_fetchall("SELECT a FROM t").empty());
}

TEST_F(ConnectionTest, ExecuteReturnsChangedRowCount) {
  Connection conn = pasyn::connect(db_path());
  EXPECT_EQ(conn.execute("CREATE TABLE t(a)"), 0);
  EXPECT_EQ(conn.execute("INSERT INTO t VALUES (1), (2), (3)"), 3);
  EXPECT_EQ(conn.execute("UPDATE t SET a = a + 10 WHERE a >= 2"), 2);
  EXPECT_EQ(conn.execute("SELECT * FROM t"), 0);
  // DDL changes no rows, although sqlite3_changes() still reports the UPDATE above.
  EXPECT_EQ(conn.execute("CREATE TABLE u(b)"), 0);
  EXPECT_EQ(conn.execute("DELETE FROM t"), 3);
}

TEST_F(ConnectionTest, LastColumnNamesFollowTheLastFetch) {
  Connection conn = pasyn::connect(db_path());
  conn.execute("CREATE TABLE t(a, b)");
  conn.execute_fetchall("SELECT a, b AS second FROM t");
  EXPECT_EQ(conn.last_column_names(), (std::vector<std::string>{"a", "second"}));
  conn.execute_fetchone("SELECT * FROM t");
  EXPECT_EQ(conn.last_column_names(), (std::vector<std::string>{"a", "b"}));
  // A cached SELECT * sees a column added since it was first prepared.
  conn.execute("ALTER TABLE t ADD COLUMN c");
  conn.execute("INSERT INTO t VALUES (1, 2, 3)");
  const auto row = conn.execute_fetchone("SELECT * FROM t");
  EXPECT_EQ(conn.last_column_names(), (std::vector<std::string>{"a", "b", "c"}));
  EXPECT_EQ(row, (Row{1, 2, 3}));
}

// The names are read from the statement only when asked for; they must still be the names the
// query had when it ran, whatever happens to its statement in between.
TEST_F(ConnectionTest, LastColumnNamesOutliveTheirStatement) {
  Connection conn = pasyn::connect(db_path());
  conn.execute("CREATE TABLE t(a, b)");
  conn.execute_fetchone("SELECT * FROM t");
  conn.execute("INSERT INTO t VALUES (1, 2)");  // not a query: the names stay
  EXPECT_EQ(conn.last_column_names(), (std::vector<std::string>{"a", "b"}));

  // The same cached statement stepped again by execute(), re-prepared after a schema change.
  conn.execute_fetchone("SELECT * FROM t");
  conn.execute("ALTER TABLE t ADD COLUMN c");
  conn.execute("SELECT * FROM t");
  EXPECT_EQ(conn.last_column_names(), (std::vector<std::string>{"a", "b"}));

  // The statement cache starting over finalizes the statement the names came from.
  conn.execute_fetchone("SELECT a AS x FROM t");
  for (int i = 0; i < 300; ++i) conn.execute("SELECT " + std::to_string(i));
  EXPECT_EQ(conn.last_column_names(), (std::vector<std::string>{"x"}));
}

// Without the reset, the reader's half-read statement would pin its WAL snapshot and the
// checkpoint below would report busy = 1 after its busy timeout.
TEST_F(ConnectionTest, StatementIsResetSoReadersDoNotBlockCheckpoints) {
  Connection writer = pasyn::connect(db_path());
  // fetchall, not fetchone: only the reader's behaviour should decide the outcome.
  const auto mode = writer.execute_fetchall("PRAGMA journal_mode = WAL");
  ASSERT_EQ(mode, (std::vector<Row>{{"wal"}}));
  // Keep the rows in the WAL, so that the reader's snapshot depends on it.
  writer.execute("PRAGMA wal_autocheckpoint = 0");
  writer.execute("PRAGMA busy_timeout = 100");
  writer.execute("CREATE TABLE big(a, b)");
  writer.executescript(
      "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 20000)"
      "INSERT INTO big SELECT i, randomblob(64) FROM n;");

  Connection reader = pasyn::connect(db_path(), OpenFlags::readonly());
  const auto first = reader.execute_fetchone("SELECT a FROM big ORDER BY rowid");
  ASSERT_EQ(first, (Row{1}));
  EXPECT_FALSE(reader.in_transaction());

  const auto result = writer.execute_fetchone("PRAGMA wal_checkpoint(TRUNCATE)");
  ASSERT_TRUE(result.has_value());
  EXPECT_EQ(result->at(0), Value(0)) << "busy: a reader still holds a snapshot";

  // The same holds after execute_fetchall and after a call that failed while binding.
  writer.execute("INSERT INTO big VALUES (0, 0)");
  reader.execute_fetchall("SELECT a FROM big LIMIT 5");
  EXPECT_THROW(reader.execute_fetchone("SELECT a FROM big WHERE a > ?", {1, 2}),
               pasyn::ProgrammingError);
  EXPECT_EQ(writer.execute_fetchone("PRAGMA wal_checkpoint(TRUNCATE)")->at(0), Value(0));
}

TEST_F(ConnectionTest, ExecutescriptRunsEveryStatement) {
  Connection conn = pasyn::connect(db_path());
  conn.executescript(R"sql(
    -- schema
    CREATE TABLE t(a);
    INSERT INTO t VALUES (1);
    /* data */ INSERT INTO t VALUES (2);
    SELECT * FROM t;  -- rows are discarded
    INSERT INTO t VALUES (3)
  )sql");
  EXPECT_EQ(conn.execute_fetchall("SELECT a FROM t ORDER BY a"), (std::vector<Row>{{1}, {2}, {3}}));
}

TEST_F(ConnectionTest, ExecutescriptStopsAtTheFirstError) {
  Connection conn = pasyn::connect(db_path());
  conn.execute("CREATE TABLE t(a UNIQUE)");
  EXPECT_THROW(conn.executescript("INSERT INTO t VALUES (1); INSERT INTO t VALUES (1);"
                                  "INSERT INTO t VALUES (2);"),
               pasyn::IntegrityError);
  EXPECT_EQ(conn.execute_fetchall("SELECT a FROM t"), (std::vector<Row>{{1}}));
  EXPECT_THROW(conn.executescript("INSERT INTO t VALUES (3); SELEKT"), pasyn::OperationalError);
  EXPECT_EQ(count_rows(conn, "t"), 2);
}

TEST_F(ConnectionTest, CacheHandlesMoreDistinctStatementsThanItsCapacity) {
  Connection conn = pasyn::connect(db_path());
  constexpr std::int64_t kStatements = 600;
  for (int round = 0; round < 2; ++round) {
    for (std::int64_t i = 0; i < kStatements; ++i) {
      const auto row = conn.execute_fetchone("SELECT ? + " + std::to_string(i), {round});
      ASSERT_TRUE(row.has_value());
      ASSERT_EQ(row->at(0), Value(i + round));
    }
  }
}

TEST_F(ConnectionTest, MovedConnectionKeepsWorkingAndSourceIsClosed) {
  Connection source = pasyn::connect(db_path());
  source.execute("CREATE TABLE t(a)");
  Connection target = std::move(source);
  EXPECT_EQ(target.execute("INSERT INTO t VALUES (1)"), 1);
  EXPECT_TRUE(source.closed());  // NOLINT(bugprone-use-after-move): documenting the state
  EXPECT_THROW(source.execute("SELECT 1"), pasyn::ConnectionClosedError);

  Connection other = pasyn::connect(dir_.file("other.db"));
  other = std::move(target);  // closes other.db's connection
  EXPECT_EQ(other.path(), db_path());
  EXPECT_EQ(count_rows(other, "t"), 1);
}

}  // namespace
