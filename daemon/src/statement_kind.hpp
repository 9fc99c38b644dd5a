// Statement kinds judged from SQL text, before SQLite sees it: the writer uses them to decide
// how a request runs (in the batch, alone, or refused). Pure functions, thread-safe.
#pragma once

#include <string_view>

namespace pasyn::server {

/// True for SQL that SQLite cannot run inside a transaction (VACUUM, PRAGMA journal_mode, ...),
/// judged from its first statement's leading keywords.
bool must_run_alone(std::string_view sql);
/// True when `sql` holds at most one statement (judged from its text: quotes and comments are
/// skipped, the first top-level ';' ends the statement).
bool is_single_statement(std::string_view sql);
/// True when the first keyword of `sql` is SAVEPOINT, RELEASE or ROLLBACK (TO).
bool is_savepoint_sql(std::string_view sql);
/// True when the first keyword of `sql` is ROLLBACK.
bool is_rollback_sql(std::string_view sql);
/// True when the first keyword of `sql` is VACUUM.
bool is_vacuum(std::string_view sql);
/// True when `sql` starts with CREATE [TEMP|TEMPORARY] TABLE [IF NOT EXISTS] name AS: SQLite
/// fills that table without calling the preupdate hook, so the change feed cannot list its rows.
bool is_create_table_as(std::string_view sql);
/// True when [p, end) holds only whitespace, comments and empty statements (stray ';'): the
/// tail sqlite3_prepare leaves after the first statement says whether there were several.
bool only_space_or_comments(const char* p, const char* end);

}  // namespace pasyn::server
