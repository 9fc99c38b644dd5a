// Unit tests of the allow-list (daemon/src/authorizer.cpp): decide() and pragma_allowed() as
// pure functions of the mode and SQLite's arguments.
#include "authorizer.hpp"

#include <gtest/gtest.h>

namespace {

using pasyn::server::client_index;
using pasyn::server::client_mode;
using pasyn::server::decide;
using pasyn::server::kClientModes;
using pasyn::server::Mode;
using pasyn::server::pragma_allowed;
using pasyn::server::Role;
using Code = pasyn::proto::PasynCode;

constexpr Mode kClients[] = {Mode::kReadOnly, Mode::kWriter, Mode::kWriterTransaction, Mode::kAdmin,
                             Mode::kAdminTransaction};
constexpr Mode kWriters[] = {Mode::kWriter, Mode::kWriterTransaction, Mode::kAdmin,
                             Mode::kAdminTransaction};

bool allowed(Mode m, int action, const char* a1 = nullptr, const char* a2 = nullptr,
             const char* a3 = "main") {
  return decide(m, action, a1, a2, a3, nullptr).allowed();
}

TEST(AllowList, ConnectionStatePragmasAreRefusedToEveryClientInEveryForm) {
  for (Mode m : kClients) {
    for (const char* name : {"hard_heap_limit",
                             "soft_heap_limit",
                             "cache_size",
                             "mmap_size",
                             "foreign_keys",
                             "case_sensitive_like",
                             "recursive_triggers",
                             "max_page_count",
                             "busy_timeout",
                             "query_only",
                             "synchronous",
                             "writable_schema",
                             "ignore_check_constraints",
                             "trusted_schema",
                             "locking_mode",
                             "wal_autocheckpoint",
                             "temp_store",
                             "threads",
                             "secure_delete",
                             "auto_vacuum",
                             "page_size",
                             "cell_size_check",
                             "defer_foreign_keys",
                             "legacy_alter_table",
                             "reverse_unordered_selects",
                             "automatic_index",
                             "analysis_limit",
                             "schema_version",
                             "Cache_Size",
                             "no_such_pragma"}) {
      EXPECT_FALSE(allowed(m, SQLITE_PRAGMA, name, "1")) << name;
    }
    for (const char* name : {"incremental_vacuum", "shrink_memory", "cache_size", "mmap_size",
                             "hard_heap_limit", "no_such_pragma"}) {
      EXPECT_FALSE(allowed(m, SQLITE_PRAGMA, name, nullptr)) << name;
    }
  }
}

TEST(AllowList, IntrospectionPragmasAreAllowedToEveryClient) {
  for (Mode m : kClients) {
    for (const char* name : {"table_info", "table_xinfo", "index_list", "index_info", "index_xinfo",
                             "foreign_key_list", "foreign_key_check", "integrity_check",
                             "quick_check", "table_list"}) {
      EXPECT_TRUE(allowed(m, SQLITE_PRAGMA, name, nullptr)) << name;
      EXPECT_TRUE(allowed(m, SQLITE_PRAGMA, name, "t")) << name;
    }
    for (const char* name :
         {"user_version", "application_id", "journal_mode", "data_version", "page_count",
          "page_size", "freelist_count", "schema_version", "compile_options", "database_list",
          "collation_list", "function_list", "pragma_list", "foreign_keys", "PAGE_COUNT"}) {
      EXPECT_TRUE(allowed(m, SQLITE_PRAGMA, name, nullptr)) << name;
    }
    // Only the main database.
    EXPECT_FALSE(allowed(m, SQLITE_PRAGMA, "table_info", "t", "temp"));
  }
}

TEST(AllowList, OnlyWritersSetHeaderFieldsOrRunOptimizeAndOnlyTheAdminCheckpoints) {
  for (Mode m : kWriters) {
    EXPECT_TRUE(allowed(m, SQLITE_PRAGMA, "user_version", "3"));
    EXPECT_TRUE(allowed(m, SQLITE_PRAGMA, "application_id", "3"));
    EXPECT_TRUE(allowed(m, SQLITE_PRAGMA, "optimize", nullptr));
    EXPECT_TRUE(allowed(m, SQLITE_PRAGMA, "journal_mode", "WAL"));
    EXPECT_FALSE(allowed(m, SQLITE_PRAGMA, "journal_mode", "delete"));
  }
  for (const char* name : {"user_version", "application_id", "optimize", "journal_mode"}) {
    EXPECT_FALSE(allowed(Mode::kReadOnly, SQLITE_PRAGMA, name, "wal")) << name;
  }
  EXPECT_FALSE(allowed(Mode::kReadOnly, SQLITE_PRAGMA, "optimize", nullptr));
  for (Mode m : {Mode::kAdmin, Mode::kAdminTransaction}) {
    EXPECT_TRUE(allowed(m, SQLITE_PRAGMA, "wal_checkpoint", nullptr));
    EXPECT_TRUE(allowed(m, SQLITE_PRAGMA, "wal_checkpoint", "TRUNCATE"));
  }
  for (Mode m : {Mode::kReadOnly, Mode::kWriter, Mode::kWriterTransaction}) {
    EXPECT_FALSE(allowed(m, SQLITE_PRAGMA, "wal_checkpoint", nullptr));
  }
}

TEST(AllowList, EveryTempObjectIsRefused) {
  for (Mode m : kClients) {
    for (int action : {SQLITE_CREATE_TEMP_TABLE, SQLITE_CREATE_TEMP_INDEX,
                       SQLITE_CREATE_TEMP_TRIGGER, SQLITE_CREATE_TEMP_VIEW, SQLITE_DROP_TEMP_TABLE,
                       SQLITE_DROP_TEMP_INDEX, SQLITE_DROP_TEMP_TRIGGER, SQLITE_DROP_TEMP_VIEW}) {
      EXPECT_FALSE(allowed(m, action, "t", "u", "temp")) << action;
    }
    // The schema table of temp, written by CREATE TEMP ...
    EXPECT_FALSE(allowed(m, SQLITE_INSERT, "sqlite_temp_master", nullptr, "temp"));
    // ... but updated by ALTER TABLE ... RENAME (writers) and asked about when an eponymous
    // virtual table is declared (every client; SQLite refuses real writes to schema tables).
    EXPECT_EQ(allowed(m, SQLITE_UPDATE, "sqlite_temp_master", "sql", "temp"), m != Mode::kReadOnly);
    EXPECT_TRUE(allowed(m, SQLITE_UPDATE, "sqlite_master", "sql", "main"));
  }
}

TEST(AllowList, ReadOnlyPeersOnlyRead) {
  EXPECT_TRUE(allowed(Mode::kReadOnly, SQLITE_SELECT));
  EXPECT_TRUE(allowed(Mode::kReadOnly, SQLITE_READ, "t", "c"));
  EXPECT_TRUE(allowed(Mode::kReadOnly, SQLITE_FUNCTION, nullptr, "abs", nullptr));
  EXPECT_TRUE(allowed(Mode::kReadOnly, SQLITE_RECURSIVE, nullptr, nullptr, nullptr));
  for (int action : {SQLITE_INSERT, SQLITE_UPDATE, SQLITE_DELETE, SQLITE_CREATE_TABLE,
                     SQLITE_CREATE_INDEX, SQLITE_CREATE_TRIGGER, SQLITE_CREATE_VIEW,
                     SQLITE_DROP_TABLE, SQLITE_ALTER_TABLE, SQLITE_ANALYZE, SQLITE_REINDEX,
                     SQLITE_CREATE_VTABLE, SQLITE_SAVEPOINT, SQLITE_TRANSACTION}) {
    EXPECT_FALSE(allowed(Mode::kReadOnly, action, "t", nullptr)) << action;
  }
}

TEST(AllowList, WritersChangeRowsAndSchemaOfTheMainDatabaseOnly) {
  for (Mode m : kWriters) {
    for (int action :
         {SQLITE_INSERT, SQLITE_UPDATE, SQLITE_DELETE, SQLITE_CREATE_TABLE, SQLITE_CREATE_INDEX,
          SQLITE_CREATE_TRIGGER, SQLITE_CREATE_VIEW, SQLITE_DROP_TABLE, SQLITE_DROP_INDEX,
          SQLITE_DROP_TRIGGER, SQLITE_DROP_VIEW, SQLITE_ANALYZE, SQLITE_REINDEX}) {
      EXPECT_TRUE(allowed(m, action, "t", nullptr)) << action;
      EXPECT_FALSE(allowed(m, action, "t", nullptr, "temp")) << action;
      EXPECT_FALSE(allowed(m, action, "t", nullptr, "other")) << action;
    }
    EXPECT_TRUE(allowed(m, SQLITE_ALTER_TABLE, "main", "t", nullptr));
    EXPECT_FALSE(allowed(m, SQLITE_ALTER_TABLE, "temp", "t", nullptr));
  }
}

TEST(AllowList, TheDaemonsTablesAreOutOfReach) {
  for (Mode m : kClients) {
    for (const char* t : {"pasyn_idempotency", "PASYN_Idempotency", "pasyn_anything"}) {
      EXPECT_FALSE(allowed(m, SQLITE_READ, t, "key")) << t;
      EXPECT_FALSE(allowed(m, SQLITE_INSERT, t, nullptr)) << t;
      EXPECT_FALSE(allowed(m, SQLITE_UPDATE, t, "reply")) << t;
      EXPECT_FALSE(allowed(m, SQLITE_DELETE, t, nullptr)) << t;
      EXPECT_FALSE(allowed(m, SQLITE_DROP_TABLE, t, nullptr)) << t;
      EXPECT_FALSE(allowed(m, SQLITE_CREATE_INDEX, "i", t)) << t;
      EXPECT_FALSE(allowed(m, SQLITE_CREATE_TRIGGER, "tr", t)) << t;
      EXPECT_FALSE(allowed(m, SQLITE_ALTER_TABLE, "main", t, nullptr)) << t;
    }
  }
  EXPECT_TRUE(allowed(Mode::kInternal, SQLITE_READ, "pasyn_idempotency", "key"));
}

TEST(AllowList, SavepointsOnlyInsideATransactionAndNeverTheDaemonsName) {
  for (Mode m : {Mode::kWriterTransaction, Mode::kAdminTransaction}) {
    EXPECT_TRUE(allowed(m, SQLITE_SAVEPOINT, "BEGIN", "mine", nullptr));
    for (const char* name : {"pasyn_request", "PASYN_REQUEST", "Pasyn_Request"}) {
      const auto d = decide(m, SQLITE_SAVEPOINT, "RELEASE", name, nullptr, nullptr);
      EXPECT_FALSE(d.allowed()) << name;
      EXPECT_EQ(d.code, Code::kMisuse);
    }
  }
  for (Mode m : {Mode::kWriter, Mode::kAdmin, Mode::kReadOnly}) {
    EXPECT_FALSE(allowed(m, SQLITE_SAVEPOINT, "BEGIN", "mine", nullptr));
  }
}

TEST(AllowList, AttachTransactionsAndUnknownActionsAreRefused) {
  for (Mode m : kClients) {
    EXPECT_FALSE(allowed(m, SQLITE_ATTACH, "/tmp/x", nullptr, nullptr));
    EXPECT_FALSE(allowed(m, SQLITE_DETACH, "x", nullptr, nullptr));
    EXPECT_FALSE(allowed(m, SQLITE_COPY, "t", "f"));
    EXPECT_FALSE(allowed(m, 9999, nullptr, nullptr));
    const auto tx = decide(m, SQLITE_TRANSACTION, "BEGIN", nullptr, nullptr, nullptr);
    EXPECT_FALSE(tx.allowed());
    EXPECT_EQ(tx.code, Code::kMisuse);
  }
}

TEST(AllowList, InternalAllowsAllNoneAllowsNothingVacuumAttachesNoFile) {
  EXPECT_TRUE(allowed(Mode::kInternal, SQLITE_PRAGMA, "cache_size", "10"));
  EXPECT_TRUE(allowed(Mode::kInternal, SQLITE_TRANSACTION, "BEGIN"));
  EXPECT_FALSE(allowed(Mode::kNone, SQLITE_SELECT));
  EXPECT_FALSE(allowed(Mode::kNone, SQLITE_READ, "t", "c"));
  EXPECT_TRUE(allowed(Mode::kVacuum, SQLITE_ATTACH, "", nullptr, nullptr));
  EXPECT_FALSE(allowed(Mode::kVacuum, SQLITE_ATTACH, "/tmp/copy", nullptr, nullptr));
}

TEST(AllowList, EachRoleAndTransactionStateHasItsOwnCacheSlot) {
  bool seen[kClientModes] = {};
  for (Role r : {Role::kWriter, Role::kReadOnly, Role::kAdmin}) {
    for (bool tx : {false, true}) {
      const Mode m = client_mode(r, tx);
      ASSERT_LT(client_index(m), kClientModes);
      seen[client_index(m)] = true;
      if (r == Role::kReadOnly) {
        EXPECT_EQ(m, Mode::kReadOnly);
      }
    }
  }
  for (bool s : seen) EXPECT_TRUE(s);
  EXPECT_NE(client_index(Mode::kWriter), client_index(Mode::kReadOnly));
  EXPECT_NE(client_index(Mode::kWriter), client_index(Mode::kAdmin));
  EXPECT_NE(client_index(Mode::kWriter), client_index(Mode::kWriterTransaction));
}

TEST(AllowList, PragmaAllowedIsCaseInsensitiveOnNamesAndJournalModeValue) {
  EXPECT_TRUE(pragma_allowed(Mode::kWriter, "Table_Info", "t"));
  EXPECT_TRUE(pragma_allowed(Mode::kWriter, "JOURNAL_MODE", "Wal"));
  EXPECT_FALSE(pragma_allowed(Mode::kWriter, "journal_mode", "wal2"));
}

}  // namespace
