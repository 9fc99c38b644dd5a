// The writer's text classifiers: which SQL must run outside a transaction, and what is one
// statement (daemon/src/writer.cpp).
#include <gtest/gtest.h>

#include "statement_kind.hpp"

namespace {

using pasyn::server::is_single_statement;
using pasyn::server::is_vacuum;
using pasyn::server::must_run_alone;

TEST(MustRunAlone, RecognisesVacuumAndTheTransactionlessPragmasInAnyCase) {
  EXPECT_TRUE(must_run_alone("VACUUM"));
  EXPECT_TRUE(must_run_alone("  -- maintenance\n  vacuum"));
  EXPECT_TRUE(must_run_alone("/* x */ Vacuum main"));
  EXPECT_TRUE(must_run_alone("PRAGMA journal_mode=WAL"));
  EXPECT_TRUE(must_run_alone("pragma main.JOURNAL_MODE = delete"));
  EXPECT_TRUE(must_run_alone("PRAGMA main . foreign_keys = ON"));
  EXPECT_TRUE(must_run_alone("PRAGMA wal_checkpoint(TRUNCATE)"));
}

// SQLite reads a pragma's name quoted too (a probe: PRAGMA "journal_mode" ran inside a
// transaction, where the unquoted one is MISUSE).
TEST(MustRunAlone, ReadsAQuotedPragmaNameAsSQLiteDoes) {
  EXPECT_TRUE(must_run_alone("PRAGMA \"journal_mode\""));
  EXPECT_TRUE(must_run_alone("pragma 'Foreign_Keys'"));
  EXPECT_TRUE(must_run_alone("PRAGMA `locking_mode`"));
  EXPECT_TRUE(must_run_alone("PRAGMA [page_size] = 4096"));
  EXPECT_TRUE(must_run_alone("PRAGMA \"main\".\"journal_mode\" = wal"));
  EXPECT_TRUE(must_run_alone("PRAGMA [main] . 'wal_checkpoint'"));
  EXPECT_FALSE(must_run_alone("PRAGMA \"user_version\""));
  EXPECT_FALSE(must_run_alone("PRAGMA \"journal\"\"_mode\""));  // the name journal"_mode
}

TEST(MustRunAlone, LeavesEverythingElseInTheBatch) {
  EXPECT_FALSE(must_run_alone("INSERT INTO vacuum VALUES (1)"));
  EXPECT_FALSE(must_run_alone("PRAGMA user_version = 3"));
  EXPECT_FALSE(must_run_alone("PRAGMA journal_mode_but_longer_than_any_keyword"));
  EXPECT_FALSE(must_run_alone("SELECT 'VACUUM'"));
  EXPECT_FALSE(must_run_alone(""));
  EXPECT_FALSE(must_run_alone("vacuumx"));
}

TEST(IsVacuum, LooksAtTheFirstKeywordOnly) {
  EXPECT_TRUE(is_vacuum("vacuum INTO '/tmp/x'"));
  EXPECT_FALSE(is_vacuum("PRAGMA journal_mode=WAL"));
}

TEST(IsSingleStatement, SkipsQuotesCommentsAndTrailingSemicolons) {
  EXPECT_TRUE(is_single_statement("VACUUM"));
  EXPECT_TRUE(is_single_statement("VACUUM;"));
  EXPECT_TRUE(is_single_statement("VACUUM; -- done\n;"));
  EXPECT_TRUE(is_single_statement("INSERT INTO t VALUES (';', \"a;b\", [c;d], `e;f`)"));
  EXPECT_TRUE(is_single_statement("SELECT 1 /* ; */"));
  EXPECT_FALSE(is_single_statement("VACUUM; SELECT 1"));
  EXPECT_FALSE(is_single_statement("PRAGMA journal_mode=WAL; INSERT INTO t VALUES (1)"));
}

}  // namespace

TEST(StatementKindTest, CreateTableAsSelectIsToldFromAPlainCreateTable) {
  using pasyn::server::is_create_table_as;
  EXPECT_TRUE(is_create_table_as("CREATE TABLE c AS SELECT 1"));
  EXPECT_TRUE(is_create_table_as("  -- copy\n create temp TABLE c as select 1"));
  EXPECT_TRUE(is_create_table_as("CREATE TEMPORARY TABLE IF NOT EXISTS main.c AS SELECT 1"));
  EXPECT_TRUE(is_create_table_as("create /* x */ table \"a\"\"b\" /* y */ as select 1"));
  EXPECT_TRUE(is_create_table_as("CREATE TABLE [x y] AS VALUES (1)"));
  EXPECT_TRUE(is_create_table_as("CREATE TABLE if AS SELECT 1"));  // a table named "if"
  EXPECT_TRUE(is_create_table_as("CREATE TABLE `m`.`c` AS SELECT 1"));
  EXPECT_TRUE(is_create_table_as("CREATE TABLE a$b AS SELECT 1"));
  EXPECT_TRUE(is_create_table_as("CREATE TABLE données AS SELECT 1"));
  EXPECT_TRUE(is_create_table_as("CREATE TABLE été.x AS SELECT 1"));
  EXPECT_FALSE(is_create_table_as("CREATE TABLE c (a)"));
  EXPECT_FALSE(is_create_table_as("CREATE TABLE if(a)"));
  EXPECT_FALSE(is_create_table_as("CREATE TABLE IF NOT EXISTS c (a AS (1))"));
  EXPECT_FALSE(is_create_table_as("CREATE VIEW v AS SELECT 1"));
  EXPECT_FALSE(is_create_table_as("CREATE INDEX i ON t (a)"));
  EXPECT_FALSE(is_create_table_as("INSERT INTO t SELECT 1"));
  EXPECT_FALSE(is_create_table_as("CREATE"));
  EXPECT_FALSE(is_create_table_as(""));
}
