// The change feed (PROTOCOL.md §8): what each committed transaction changed, published to the
// connections that subscribed.
//
// Design. The writer connection's preupdate hook (sqlite3_preupdate_hook) feeds a ChangeLog,
// which holds the changes of the open transaction only. The preupdate hook, not the update hook:
// SQLite calls it for every row of a rowid table that changes, also where the update hook is
// silent (rows deleted by ON CONFLICT REPLACE; a DELETE without WHERE, whose truncate
// optimization SQLite turns off while a preupdate hook is set), and it names both rowids of an
// UPDATE that moves a row (recorded as the old rowid removed, then the new one updated).
// WITHOUT ROWID tables have no rowid to report: their changes are left out (see on_preupdate). It
// is told, by the writer, of every statement that opens, commits or rolls back the transaction or
// one of the writer's own per-request savepoints, so that what it holds is exactly what a COMMIT
// makes durable:
//  * begin(): empty (whatever a vanished transaction left is gone with it);
//  * savepoint()/release()/rollback_to(): a stack of marks; rollback_to() drops what was
//    recorded since the innermost mark (the failed request's changes);
//  * rollback(): empty;
//  * uncertain(): a client's own ROLLBACK TO undid an unknown part: the commit is published as
//    a gap, never as a list that may name rows that were not written;
//  * take_commit(), after a successful COMMIT: the committed changes.
// Changes recorded while no transaction is open (a statement run alone, such as VACUUM) are
// published as a gap right after that statement (Writer::run_alone). Rows SQLite writes without
// the hook (CREATE TABLE ... AS SELECT: Writer::note_client_statement; VACUUM, which copies
// every table and renumbers rowids: Writer::run_alone) or in a schema other than main and temp
// make their commit a gap too. The FeedHub numbers published commits, keeps the most recent
// ones (bounded by bytes) for subscribers that resume, and appends each commit's frame to every
// subscriber's output on the writer thread, right after the commit's replies.
#pragma once

#include <sqlite3.h>

#include <chrono>
#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <pasyn/proto/feed.hpp>

#include "fifo.hpp"

namespace pasyn::server {

/// One committed transaction's changes, in the order they happened.
struct CommittedChanges {
  struct Entry {
    std::uint32_t table;  // index into `tables`
    proto::ChangeOp op;
    std::int64_t rowid;
  };
  std::vector<std::string> tables;
  std::vector<Entry> entries;
  bool uncertain = false;  // publish as a gap: the exact changes are unknown
  // The bytes of its CHANGE frames for a subscriber of every table (each entry repeats its
  // table's name): set by FeedHub::publish().
  std::size_t encoded_bytes = 0;
};

/// Emptied commits that the feed's history let go, for ChangeLog::take_commit() to fill again
/// instead of allocating: the daemon allocates nothing per request in its steady state
/// (DaemonAllocTest). A few, not one: as batch sizes vary the history lets go of none, one or
/// several commits per publish. A commit's entries have a capacity class (a power of two, at
/// least kMinEntries; ChangeLog::capacity_for), so commits of 1 to 8 rows all fit one spare, and a
/// spare is taken only for its own class (never a much larger one, which the history's byte bound
/// would count). Thread-safety: the writer thread only. Ownership: holds the spares.
class SpareCommits {
 public:
  static constexpr std::size_t kSpares = 64;
  SpareCommits() { pool_.reserve(kSpares); }
  /// A spare whose entries have capacity `capacity`, or null.
  std::shared_ptr<CommittedChanges> take(std::size_t capacity) noexcept;
  /// Keeps `c` (nobody else holds it), in place of the oldest spare when kSpares are kept.
  void give(std::shared_ptr<CommittedChanges> c) noexcept;
  std::size_t size() const noexcept { return pool_.size(); }

 private:
  std::vector<std::shared_ptr<CommittedChanges>> pool_;  // capacity kSpares, reserved
};

/// The open transaction's changes. Thread-safety: the writer thread only (the hook runs
/// on it, inside sqlite3_step). Ownership: plain values.
class ChangeLog {
 public:
  /// Installs the preupdate hook on `db` (the writer connection).
  void install(sqlite3* db);

  void begin() noexcept;
  void savepoint();
  void release() noexcept;
  void rollback_to() noexcept;
  void rollback() noexcept;
  void uncertain() noexcept { uncertain_ = true; }
  /// True when rows changed while no transaction was open (a statement run alone, such as
  /// VACUUM): take_commit() then gives a gap to publish at once.
  bool stray() const noexcept { return stray_; }
  /// Rows changed that the log cannot list: the open transaction's commit is a gap, or, outside
  /// one, the gap take_commit() gives next.
  void unknown() noexcept;
  /// After a successful COMMIT: the transaction's changes, or null if it changed no row the
  /// feed reports (and was not uncertain). Leaves the log closed and empty. They are written
  /// into a spare of their capacity class if `spares` holds one (a commit FeedHub::publish()
  /// let go), so that publishing costs no allocation in the steady state.
  std::shared_ptr<CommittedChanges> take_commit(SpareCommits& spares);
  /// The capacity class of a commit of `entries` changes: the power of two at or above it, at
  /// least kMinEntries; `entries` itself above kMaxSpareEntries (such commits are not kept as
  /// spares, so they hold no more than they need).
  static std::size_t capacity_for(std::size_t entries) noexcept;
  static constexpr std::size_t kMinEntries = 8;
  static constexpr std::size_t kMaxSpareEntries = 1024;

 private:
  static void on_preupdate(void* self, sqlite3* db, int op, const char* schema, const char* table,
                           sqlite3_int64 old_rowid, sqlite3_int64 new_rowid);
  void record(int op, const char* table, sqlite3_int64 rowid);

  bool open_ = false;
  bool uncertain_ = false;
  bool stray_ = false;  // a change outside any transaction: the next commit is uncertain
  CommittedChanges current_;
  std::vector<std::size_t> marks_;  // entries_.size() at each open savepoint of the writer
};

/// A subscriber's end of the feed: its connection. Implemented by Session.
class FeedSink {
 public:
  virtual ~FeedSink() = default;
  /// Any thread: appends frames to the connection's output.
  virtual void push(std::vector<std::uint8_t> frames) = 0;
  /// Any thread: bytes of output not yet written to the peer.
  virtual std::size_t unsent() = 0;
};

/// Published commits and the subscribers. Thread-safety: every method may be called from any
/// thread (publish from the writer thread, subscribe/unsubscribe from the I/O thread); one
/// mutex orders publishing and subscribing, so a subscriber sees every commit after its start
/// point exactly once. Ownership: holds shared references to the subscribers' sinks until they
/// unsubscribe.
class FeedHub {
 public:
  /// `history_bytes`: how many bytes of changes are kept for resuming; `max_unsent`: a
  /// subscriber with this many bytes unsent gets no more frames until it reads (then a gap).
  FeedHub(std::size_t history_bytes, std::size_t max_unsent);

  std::uint64_t epoch() const noexcept { return epoch_; }

  /// Writer thread: numbers `c`, keeps it, and queues its frames for every subscriber. Never
  /// throws: a subscriber it cannot send to (no memory) gets a gap instead. A subscriber's
  /// frames are pushed to its connection once kFlushBytes wait, or by flush_due() kFlushDelay
  /// after the oldest: one wake-up of a subscriber per many small commits, not one per commit
  /// (measured: pushing every commit to 2 subscribers halved 16 acked writers at full).
  /// The commits the history lets go of that nobody else holds and that are not larger than
  /// ChangeLog::kMaxSpareEntries go to `spares`, if given, for the next take_commit().
  void publish(std::shared_ptr<CommittedChanges> c, SpareCommits* spares = nullptr) noexcept;

  /// Writer thread: pushes the frames that have waited kFlushDelay (all of them if `all`), and,
  /// every kBehindPoll while a subscriber is behind, tells one that has read its output down
  /// of the commits it missed (a gap), without waiting for another commit.
  void flush_due(bool all = false) noexcept;
  /// When flush_due() has frames to push next, if any.
  std::optional<std::chrono::steady_clock::time_point> next_flush() const;

  /// Registers `sink` with its tables (empty: all) and start point, and pushes to it the
  /// SUBSCRIBED reply followed by the held commits after the resume point (encoded outside the
  /// lock that publish() takes, then what was published meanwhile under it, and registered
  /// under it: nothing is missed or sent twice). I/O thread (one subscribe at a time per sink).
  /// Returns an error message (nothing registered, nothing pushed) for a resume point beyond the
  /// last commit.
  std::optional<std::string> subscribe(const std::shared_ptr<FeedSink>& sink,
                                       std::uint64_t request_id, const proto::Subscribe& m);
  void unsubscribe(const FeedSink* sink);
  /// Drops every subscriber (the server stopped).
  void unsubscribe_all();

  std::size_t subscribers() const;
  std::uint64_t last_seq() const;

 private:
  struct Held {
    std::uint64_t seq;
    std::shared_ptr<const CommittedChanges> changes;  // shared with a subscribe() replaying it
    std::size_t bytes;
  };
  struct Snapshot {
    std::uint64_t seq;
    std::shared_ptr<const CommittedChanges> changes;
  };
  struct Subscriber {
    std::shared_ptr<FeedSink> sink;
    std::uint64_t request_id;
    std::vector<std::string> tables;           // lower-case; empty: all
    std::optional<std::uint64_t> missed_from;  // the first commit it did not get
    std::vector<std::uint8_t> queued;          // frames not pushed yet (publish, flush_due)
    std::chrono::steady_clock::time_point queued_since{};
    // The last commit its client resumes after: its start point, then the last commit frame
    // (a progress mark too) queued for it. Gaps do not move it.
    std::uint64_t sent_seq = 0;
    // Since when sent_seq lags last_seq_ (commits not for it), if it does.
    std::optional<std::chrono::steady_clock::time_point> lag_since;
  };
  // For a subscriber resuming after commit `after`: appends a gap to `out` if the history no
  // longer holds `after + 1`, and to `held` the held commits after `after`, to encode.
  // REQUIRES: mu_ held.
  void take_held_after(const Subscriber& s, std::uint64_t after, std::vector<std::uint8_t>& out,
                       std::vector<Snapshot>& held);
  // Pushes `s.queued` to its connection. REQUIRES: mu_ held.
  static void push_queued(Subscriber& s) noexcept;
  // A subscriber behind (`s.missed_from`) that has read its output down as publish() requires
  // gets the gap notice now. REQUIRES: mu_ held.
  void tell_gap_if_caught_up(Subscriber& s, std::chrono::steady_clock::time_point now) noexcept;

  // Appends the frames of commit `seq` for `s` to `out`: a commit event with the changes to its
  // tables (nothing if none), or a gap for an uncertain commit. kSent if it wrote a commit
  // event (the client's resume point moves to `seq`); kTooLarge, with `out` as it was, if the
  // frames would have passed `room` bytes (a subscriber of every table is told without
  // encoding anything: CommittedChanges::encoded_bytes).
  enum class Encoded { kNothing, kSent, kTooLarge };
  static Encoded encode_for(const Subscriber& s, std::uint64_t seq, const CommittedChanges& c,
                            std::vector<std::uint8_t>& out, std::size_t room);
  // Appends a progress mark: an empty commit event for `seq` (PROTOCOL.md §8).
  static void encode_mark(const Subscriber& s, std::uint64_t seq, std::vector<std::uint8_t>& out);
  // After frames for commit `seq` were queued for `s` (`advanced`: a commit event among them):
  // keeps sent_seq and lag_since. REQUIRES: mu_ held.
  void note_sent(Subscriber& s, bool advanced, std::uint64_t seq,
                 std::chrono::steady_clock::time_point now);
  // Queues and pushes a progress mark for last_seq_ to `s`, which has lagged kMarkDelay.
  // REQUIRES: mu_ held.
  void mark_progress(Subscriber& s, std::chrono::steady_clock::time_point now) noexcept;

  const std::uint64_t epoch_;
  const std::size_t history_bytes_;
  const std::size_t max_unsent_;
  mutable std::mutex mu_;
  std::uint64_t last_seq_ = 0;        // GUARDED_BY(mu_)
  Fifo<Held> history_;                // GUARDED_BY(mu_)
  std::vector<std::uint8_t> frames_;  // GUARDED_BY(mu_): publish()'s scratch (one subscriber's)
  std::size_t history_size_ = 0;      // GUARDED_BY(mu_): bytes of history_
  std::vector<Subscriber> subs_;      // GUARDED_BY(mu_)
  // GUARDED_BY(mu_): when flush_due() next looks at the subscribers that are behind.
  std::chrono::steady_clock::time_point next_behind_poll_{};
};

}  // namespace pasyn::server
