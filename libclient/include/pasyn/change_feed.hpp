// The change feed: hearing about committed changes without polling (PROTOCOL.md §8).
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>

#include <pasyn/export.hpp>

namespace pasyn {

/// What a Change reports. Lower-case on purpose: they read as the SQL verbs.
enum class ChangeKind {
  insert,  ///< a row was inserted
  update,  ///< a row was updated
  remove,  ///< a row was deleted
  gap,     ///< the feed missed commits from `commit_seq` on (a slow reader, a resume point
           ///< older than the daemon's history, or a commit whose exact changes are unknown);
           ///< re-read what you cache; later commits follow
  reset,   ///< the daemon restarted: sequence numbers begin a new epoch; `commit_seq` is the
           ///< new epoch's last commit before the feed went on (re-read what you cache)
};

/// One change of one committed transaction, or a gap/reset marker (then `table` is empty and
/// `rowid` 0).
struct Change {
  std::uint64_t commit_seq = 0;  ///< the commit's sequence number (per daemon run, from 1)
  std::string table;
  ChangeKind kind = ChangeKind::insert;
  std::int64_t rowid = 0;
};

/// A subscription to the committed changes of the daemon's database, opened by
/// MultiplexedClient::subscribe(). Changes arrive in commit order, and within a commit in the
/// order they happened; a commit's changes are delivered only after it committed, and never
/// those of work that was rolled back. Every changed row of a rowid table is reported (also
/// rows deleted by REPLACE, and an UPDATE that changes a rowid as `remove` of the old one, then
/// `update` of the new); WITHOUT ROWID tables are not, having no rowid: see PROTOCOL.md §8.
///
/// Ownership: owns a connection of its own to the daemon (not the MultiplexedClient's). When
/// that connection is lost, next() reconnects by itself (backing off from 25 ms to 2 s while
/// the daemon is away) and resumes after the last commit it delivered: nothing is missed while
/// the daemon still holds that point (`--feed-history`), else a `gap` says from where; after a
/// daemon restart a `reset` comes first.
///
/// Thread-safety: not safe for concurrent use; use it from one thread at a time (it may move
/// between threads).
class PASYN_EXPORT ChangeFeed {
 public:
  ChangeFeed(ChangeFeed&&) noexcept;
  ChangeFeed& operator=(ChangeFeed&&) noexcept;
  ChangeFeed(const ChangeFeed&) = delete;
  ChangeFeed& operator=(const ChangeFeed&) = delete;
  ~ChangeFeed();

  /// The next change, waiting at most `timeout`; empty when none came in time. Throws
  /// ConnectionClosedError after close(). While the connection is lost, a reconnect attempt
  /// inside it may take up to 200 ms, also past a shorter `timeout` (or a short next() could
  /// never reconnect).
  std::optional<Change> next(std::chrono::milliseconds timeout);

  /// The sequence number of the last commit whose changes next() has all returned (or the start
  /// point), in epoch(); for a feed with a table filter, also of the commits since that were not
  /// for it (the daemon's progress marks, PROTOCOL.md §8). Saved with epoch() after any next(),
  /// it is a point to resume after that skips nothing: between two changes of one commit it
  /// still names the commit before.
  std::uint64_t last_seq() const noexcept;
  /// The daemon run the sequence numbers belong to (a random non-zero number).
  std::uint64_t epoch() const noexcept;

  /// Ends the subscription and closes its connection. Idempotent.
  void close() noexcept;

  struct Impl;  // the implementation (change_feed.cpp); not part of the API

 private:
  friend class MultiplexedClient;
  explicit ChangeFeed(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace pasyn
