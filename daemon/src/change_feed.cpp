// The change feed: the open transaction's changes (ChangeLog) and their publication (FeedHub).
// See change_feed.hpp for the design and PROTOCOL.md §8 for the wire format.
#include "change_feed.hpp"

#include <strings.h>

#include <algorithm>
#include <bit>
#include <cctype>
#include <cstring>
#include <random>

namespace pasyn::server {
namespace {

// The daemon's own tables and SQLite's are not part of the feed.
bool reported_table(const char* table) {
  return strncasecmp(table, "pasyn_", 6) != 0 && strncasecmp(table, "sqlite_", 7) != 0;
}

proto::ChangeOp op_of(int sqlite_op) {
  switch (sqlite_op) {
    case SQLITE_INSERT:
      return proto::ChangeOp::kInsert;
    case SQLITE_DELETE:
      return proto::ChangeOp::kDelete;
    default:
      return proto::ChangeOp::kUpdate;
  }
}

std::string lower(std::string_view s) {
  std::string out(s);
  for (auto& c : out) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return out;
}

bool same_table(std::string_view a, std::string_view b) {
  return a.size() == b.size() && strncasecmp(a.data(), b.data(), a.size()) == 0;
}

// A commit's changes are split over frames of at most this many bytes (same seq, in order), so
// that a large commit never makes a frame over a client's maximum.
constexpr std::size_t kMaxChangeFrame = 1u << 20;
// ... plus one entry: a commit that changed a table whose name is longer than this is a gap,
// so that no frame passes a client's maximum (a 17 MiB name wedged every subscriber, probe23).
constexpr std::size_t kMaxReportedTableName = 64 * 1024;
// What one held change costs beyond its table name, for the history's byte bound.
constexpr std::size_t kHeldEntryBytes = sizeof(CommittedChanges::Entry);
constexpr std::size_t kHeldCommitBytes = 64;
// Entries of capacity the open transaction's log keeps between transactions.
constexpr std::size_t kKeptCapacity = 4096;
// A subscriber's frames are pushed once this many bytes wait, or this long after the oldest.
constexpr std::size_t kFlushBytes = 64 * 1024;
constexpr auto kFlushDelay = std::chrono::milliseconds(1);
// While a subscriber is behind (it missed commits), how often flush_due() looks whether it has
// read its output down, to tell it of the gap without waiting for another commit.
constexpr auto kBehindPoll = std::chrono::milliseconds(10);
// A subscriber whose client's resume point lags the last commit (no frame of the commits since
// was for it: a table filter) gets a progress mark this long after it began to lag.
constexpr auto kMarkDelay = std::chrono::milliseconds(100);

std::uint64_t new_epoch() {
  std::random_device rd;
  std::uint64_t e = 0;
  while (e == 0) e = (static_cast<std::uint64_t>(rd()) << 32) ^ rd();
  return e;
}

// Whether `table` of the main database is a rowid table. SQLite resolves the names rowid, oid
// and _rowid_ in every rowid table (to the rowid, or to a column of that name), and in a
// WITHOUT ROWID table only to a column of that name; so a table that lacks one of them has no
// rowid. (The session extension calls schema functions from its preupdate hook the same way.)
bool has_rowid(sqlite3* db, const char* table) {
  for (const char* name : {"rowid", "oid", "_rowid_"}) {
    if (sqlite3_table_column_metadata(db, "main", table, name, nullptr, nullptr, nullptr, nullptr,
                                      nullptr) != SQLITE_OK) {
      return false;
    }
  }
  return true;
}

}  // namespace

void ChangeLog::install(sqlite3* db) { sqlite3_preupdate_hook(db, &ChangeLog::on_preupdate, this); }

// SQLite calls this before each row of a table (not of a virtual table, nor sqlite_sequence or
// sqlite_stat1) is inserted, updated or deleted, with the rowid before and after: for an INSERT
// only the new one is defined, for a DELETE the old one, and for a WITHOUT ROWID table neither
// (both are 0 there, so only a change whose rowids are both 0 needs the schema's word).
//
// Only `main` is the database. A change in `temp` is a client's own and is not reported; one in
// any other schema (clients cannot attach one) makes the changes unknown rather than ignored.
void ChangeLog::on_preupdate(void* self, sqlite3* db, int op, const char* schema, const char* table,
                             sqlite3_int64 old_rowid, sqlite3_int64 new_rowid) {
  auto* log = static_cast<ChangeLog*>(self);
  if (std::strcmp(schema, "main") != 0) {
    if (std::strcmp(schema, "temp") != 0) log->unknown();
    return;
  }
  if (old_rowid == 0 && new_rowid == 0 && !has_rowid(db, table)) return;
  try {
    if (op == SQLITE_INSERT) {
      log->record(op, table, new_rowid);
    } else if (op == SQLITE_DELETE) {
      log->record(op, table, old_rowid);
    } else {
      // An UPDATE that moves the row to another rowid: that rowid no longer names a row.
      if (old_rowid != new_rowid) log->record(SQLITE_DELETE, table, old_rowid);
      log->record(op, table, new_rowid);
    }
  } catch (...) {  // out of memory: the changes are unknown, not wrong
    log->unknown();
  }
}

void ChangeLog::unknown() noexcept {
  if (open_) {
    uncertain_ = true;
  } else {
    stray_ = true;
  }
}

void ChangeLog::record(int op, const char* table, sqlite3_int64 rowid) {
  auto& entries = current_.entries;
  auto& tables = current_.tables;
  // The common case first: the table of the change before, which was checked when it was
  // recorded (statements mostly change one table many times; this path is a twentieth of the
  // cost of the checks below, by callgrind: ~290 instructions per inserted row before).
  if (open_ && !uncertain_ && !entries.empty() &&
      std::strcmp(tables[entries.back().table].c_str(), table) == 0) {
    entries.push_back({entries.back().table, op_of(op), rowid});
    return;
  }
  if (!reported_table(table)) return;
  if (!open_) {
    stray_ = true;
    return;
  }
  if (uncertain_) return;  // published as a gap anyway
  const auto it = std::find(tables.begin(), tables.end(), table);
  const auto index = static_cast<std::uint32_t>(it - tables.begin());
  if (it == tables.end()) {
    if (std::strlen(table) > kMaxReportedTableName) {
      uncertain_ = true;
      return;
    }
    tables.emplace_back(table);
  }
  entries.push_back({index, op_of(op), rowid});
}

void ChangeLog::begin() noexcept {
  current_.tables.clear();
  current_.entries.clear();
  marks_.clear();
  uncertain_ = false;
  open_ = true;
}

void ChangeLog::savepoint() {
  try {
    marks_.push_back(current_.entries.size());
  } catch (...) {
    uncertain_ = true;
    throw;
  }
}

void ChangeLog::release() noexcept {
  if (!marks_.empty()) marks_.pop_back();
}

void ChangeLog::rollback_to() noexcept {
  if (marks_.empty()) {
    uncertain_ = true;  // not ours to know: never guess
    return;
  }
  current_.entries.resize(std::min(current_.entries.size(), marks_.back()));
}

void ChangeLog::rollback() noexcept {
  current_.tables.clear();
  current_.entries.clear();
  marks_.clear();
  uncertain_ = false;
  open_ = false;
}

std::shared_ptr<CommittedChanges> SpareCommits::take(std::size_t capacity) noexcept {
  for (auto it = pool_.rbegin(); it != pool_.rend(); ++it) {
    if ((*it)->entries.capacity() == capacity) {
      auto c = std::move(*it);
      pool_.erase(std::next(it).base());
      return c;
    }
  }
  return nullptr;
}

void SpareCommits::give(std::shared_ptr<CommittedChanges> c) noexcept {
  if (pool_.size() == kSpares) pool_.erase(pool_.begin());  // the oldest: sizes have moved on
  pool_.push_back(std::move(c));                            // within the reserved capacity
}

std::size_t ChangeLog::capacity_for(std::size_t entries) noexcept {
  if (entries > kMaxSpareEntries) return entries;
  return std::bit_ceil(std::max(entries, kMinEntries));
}

std::shared_ptr<CommittedChanges> ChangeLog::take_commit(SpareCommits& spares) {
  const bool uncertain = uncertain_ || stray_;
  open_ = false;
  uncertain_ = stray_ = false;
  marks_.clear();
  if (current_.entries.empty() && !uncertain) {
    // Keep no capacity a large rolled-back transaction left behind.
    if (current_.entries.capacity() > kKeptCapacity) current_ = {};
    return nullptr;
  }
  // Copied, not moved: the history's byte bound counts the capacity it holds, and the log's
  // vector may have the capacity of a much larger transaction (rolled back since); a spare is
  // taken only of these changes' own capacity class.
  const std::size_t capacity = capacity_for(uncertain ? 0 : current_.entries.size());
  std::shared_ptr<CommittedChanges> c = spares.take(capacity);
  if (c) {
    c->entries.clear();
    c->encoded_bytes = 0;
  } else {
    c = std::make_shared<CommittedChanges>();
    c->entries.reserve(capacity);
  }
  c->uncertain = uncertain;
  if (uncertain) {
    c->tables.clear();
  } else {
    c->entries.assign(current_.entries.begin(), current_.entries.end());
    c->tables = current_.tables;  // element by element: a spare's strings keep their buffers
  }
  current_.entries.clear();
  current_.tables.clear();
  if (current_.entries.capacity() > kKeptCapacity) current_ = {};
  return c;
}

namespace {

// CommittedChanges::encoded_bytes: per entry the table's name (u32 length and bytes), the op
// (u8) and the rowid (i64), plus each frame's header, event, seq and count.
std::size_t encoded_size(const CommittedChanges& c) {
  std::size_t bytes = 0;
  for (const auto& e : c.entries) bytes += 4 + c.tables[e.table].size() + 1 + 8;
  const std::size_t frames = bytes / kMaxChangeFrame + 1;
  return bytes + frames * (proto::kHeaderSize + 1 + 8 + 4);
}

}  // namespace

FeedHub::FeedHub(std::size_t history_bytes, std::size_t max_unsent)
    : epoch_(new_epoch()), history_bytes_(history_bytes), max_unsent_(max_unsent) {}

FeedHub::Encoded FeedHub::encode_for(const Subscriber& s, std::uint64_t seq,
                                     const CommittedChanges& c, std::vector<std::uint8_t>& out,
                                     std::size_t room) {
  if (c.uncertain) {
    proto::encode_gap(out, s.request_id, seq);
    return Encoded::kNothing;
  }
  if (s.tables.empty() && c.encoded_bytes > room) return Encoded::kTooLarge;
  const std::size_t start = out.size();
  // Which of the commit's tables this subscriber wants.
  std::vector<char> wanted(c.tables.size(), s.tables.empty() ? 1 : 0);
  if (!s.tables.empty()) {
    for (std::size_t i = 0; i < c.tables.size(); ++i) {
      for (const auto& t : s.tables) {
        if (same_table(c.tables[i], t)) wanted[i] = 1;
      }
    }
  }
  // Frames of at most about kMaxChangeFrame; all but the last are kCommitPart, so that a client
  // delivers (and resumes after) whole commits only.
  std::size_t i = 0;
  std::size_t last_frame_at = out.size();
  bool any = false;
  while (i < c.entries.size()) {
    proto::FrameWriter w(out, proto::MsgType::kChange, s.request_id);
    w.u8(static_cast<std::uint8_t>(proto::FeedEvent::kCommitPart));
    w.u64(seq);
    const std::size_t count_at = w.position();
    w.u32(0);
    std::uint32_t count = 0;
    for (; i < c.entries.size() && w.position() - w.start() < kMaxChangeFrame; ++i) {
      const auto& e = c.entries[i];
      if (!wanted[e.table]) continue;
      w.string(c.tables[e.table]);
      w.u8(static_cast<std::uint8_t>(e.op));
      w.i64(e.rowid);
      ++count;
    }
    if (count == 0) {
      w.abandon();
      continue;
    }
    w.patch_u32(count_at, count);
    last_frame_at = w.start();
    any = true;
    w.finish();
    if (out.size() - start > room) {  // a filtered subscriber's share of a large commit
      out.resize(start);
      return Encoded::kTooLarge;
    }
  }
  // The last frame says the commit is complete.
  if (!any) return Encoded::kNothing;
  out[last_frame_at + proto::kHeaderSize] = static_cast<std::uint8_t>(proto::FeedEvent::kCommit);
  return Encoded::kSent;
}

void FeedHub::encode_mark(const Subscriber& s, std::uint64_t seq, std::vector<std::uint8_t>& out) {
  proto::FrameWriter w(out, proto::MsgType::kChange, s.request_id);
  w.u8(static_cast<std::uint8_t>(proto::FeedEvent::kCommit));
  w.u64(seq);
  w.u32(0);
  w.finish();
}

void FeedHub::note_sent(Subscriber& s, bool advanced, std::uint64_t seq,
                        std::chrono::steady_clock::time_point now) {
  if (advanced) s.sent_seq = seq;
  if (s.sent_seq >= last_seq_) {
    s.lag_since.reset();
  } else if (!s.lag_since) {
    s.lag_since = now;
  }
}

void FeedHub::publish(std::shared_ptr<CommittedChanges> c, SpareCommits* spares) noexcept {
  std::lock_guard lk(mu_);
  const std::uint64_t seq = ++last_seq_;
  const CommittedChanges* held = nullptr;
  try {
    std::size_t bytes = kHeldCommitBytes + c->entries.capacity() * kHeldEntryBytes;
    for (const auto& t : c->tables) bytes += t.capacity() + sizeof(std::string);
    c->encoded_bytes = encoded_size(*c);
    // Bounded by what a resume sends too: each entry repeats its table's name in the frames
    // (probe31: a 60,000-byte name and 20,000 rows made 1.2 GB of frames from ~1 MB held).
    bytes = std::max(bytes, c->encoded_bytes);
    history_.push_back({seq, std::move(c), bytes});
    history_size_ += bytes;
    while (history_size_ > history_bytes_ && history_.size() > 1) {
      auto& oldest = history_.front();
      history_size_ -= oldest.bytes;
      // Nobody else holds it (a resume copies references under mu_, which is held here), and
      // it was made non-const by take_commit(): the writer may fill it again.
      if (spares && oldest.changes.use_count() == 1 &&
          oldest.changes->entries.capacity() <= ChangeLog::kMaxSpareEntries) {
        spares->give(std::const_pointer_cast<CommittedChanges>(std::move(oldest.changes)));
      }
      history_.pop_front();
    }
    held = history_.back().changes.get();
  } catch (...) {  // out of memory: commit `seq` is missed by everyone, and said so
    for (auto& s : subs_) {
      if (!s.missed_from) s.missed_from = seq;
    }
    return;
  }
  const auto now = std::chrono::steady_clock::now();
  for (auto& s : subs_) {
    try {
      const std::size_t unsent = s.sink->unsent() + s.queued.size();
      // Behind: catching up first (half the bound), so that gaps do not come one per commit.
      if (s.missed_from && unsent > max_unsent_ / 2) continue;
      auto& frames = frames_;
      frames.clear();
      if (s.missed_from) proto::encode_gap(frames, s.request_id, *s.missed_from);
      const std::size_t room = max_unsent_ - std::min(max_unsent_, unsent + frames.size());
      const Encoded encoded = encode_for(s, seq, *held, frames, room);
      const bool advanced = encoded == Encoded::kSent;
      if (encoded == Encoded::kTooLarge || unsent + frames.size() > max_unsent_) {
        // Never wait for a subscriber: it hears of what it missed by flush_due() or with a
        // later commit.
        if (!s.missed_from) s.missed_from = seq;
        continue;
      }
      s.missed_from.reset();
      note_sent(s, advanced, seq, now);
      if (frames.empty()) continue;
      if (s.queued.empty()) s.queued_since = now;
      s.queued.insert(s.queued.end(), frames.begin(), frames.end());
      if (s.queued.size() >= kFlushBytes) push_queued(s);
    } catch (...) {  // out of memory for this subscriber's frames: it missed this commit
      if (!s.missed_from) s.missed_from = seq;
    }
  }
  if (frames_.capacity() > kFlushBytes) std::vector<std::uint8_t>().swap(frames_);
}

void FeedHub::push_queued(Subscriber& s) noexcept {
  if (s.queued.empty()) return;
  try {
    s.sink->push(std::exchange(s.queued, {}));
  } catch (...) {  // (push copies into the connection's output) no memory: those are missed
    s.queued.clear();
  }
}

void FeedHub::flush_due(bool all) noexcept {
  const auto now = std::chrono::steady_clock::now();
  std::lock_guard lk(mu_);
  const bool poll_behind = now >= next_behind_poll_;
  if (poll_behind) next_behind_poll_ = now + kBehindPoll;
  for (auto& s : subs_) {
    if (s.missed_from && poll_behind) tell_gap_if_caught_up(s, now);
    if (!s.missed_from && s.lag_since && now - *s.lag_since >= kMarkDelay) mark_progress(s, now);
    if (!s.queued.empty() && (all || now - s.queued_since >= kFlushDelay)) push_queued(s);
  }
}

void FeedHub::mark_progress(Subscriber& s, std::chrono::steady_clock::time_point now) noexcept {
  try {
    std::vector<std::uint8_t> mark;
    encode_mark(s, last_seq_, mark);
    if (s.sink->unsent() + s.queued.size() + mark.size() > max_unsent_) {
      s.lag_since = now;  // it does not read: tried again later
      return;
    }
    if (s.queued.empty()) s.queued_since = now;
    s.queued.insert(s.queued.end(), mark.begin(), mark.end());
    note_sent(s, true, last_seq_, now);
    push_queued(s);
  } catch (...) {  // no memory now: tried again later
    s.lag_since = now;
  }
}

void FeedHub::tell_gap_if_caught_up(Subscriber& s,
                                    std::chrono::steady_clock::time_point now) noexcept {
  try {
    // The condition publish() resumes a subscriber on.
    if (s.sink->unsent() + s.queued.size() > max_unsent_ / 2) return;
    std::vector<std::uint8_t> gap;
    proto::encode_gap(gap, s.request_id, *s.missed_from);
    if (s.queued.empty()) s.queued_since = now;
    s.queued.insert(s.queued.end(), gap.begin(), gap.end());
    s.missed_from.reset();
    note_sent(s, false, 0, now);  // a gap does not move the client's resume point
    push_queued(s);
  } catch (...) {  // no memory now: polled again later
  }
}

std::optional<std::chrono::steady_clock::time_point> FeedHub::next_flush() const {
  std::lock_guard lk(mu_);
  std::optional<std::chrono::steady_clock::time_point> next;
  const auto earliest = [&](std::chrono::steady_clock::time_point at) {
    if (!next || at < *next) next = at;
  };
  for (const auto& s : subs_) {
    if (s.missed_from) earliest(next_behind_poll_);
    if (!s.missed_from && s.lag_since) earliest(*s.lag_since + kMarkDelay);
    if (!s.queued.empty()) earliest(s.queued_since + kFlushDelay);
  }
  return next;
}

void FeedHub::take_held_after(const Subscriber& s, std::uint64_t after,
                              std::vector<std::uint8_t>& out, std::vector<Snapshot>& held) {
  const std::uint64_t first_held = history_.empty() ? last_seq_ + 1 : history_.front().seq;
  if (first_held > after + 1) proto::encode_gap(out, s.request_id, after + 1);
  for (const auto& h : history_) {
    if (h.seq > after) held.push_back({h.seq, h.changes});
  }
}

std::optional<std::string> FeedHub::subscribe(const std::shared_ptr<FeedSink>& sink,
                                              std::uint64_t request_id, const proto::Subscribe& m) {
  Subscriber s{sink, request_id, {}, std::nullopt, {}, {}, 0, std::nullopt};
  for (const auto t : m.tables) s.tables.push_back(lower(t));
  std::unique_lock lk(mu_);
  proto::Subscribed reply{epoch_, last_seq_, false};
  std::optional<std::uint64_t> after;
  if (m.resume && (m.resume->epoch == 0 || m.resume->epoch == epoch_)) {
    if (m.resume->after_seq > last_seq_) {
      return "cannot resume after commit " + std::to_string(m.resume->after_seq) +
             ": the last commit of this epoch is " + std::to_string(last_seq_);
    }
    reply.resumed = true;
    after = m.resume->after_seq;
  }
  std::vector<std::uint8_t> frames;
  proto::encode_subscribed(frames, request_id, reply);
  // Where the client's resume point is: its `after_seq`, then each commit sent to it.
  s.sent_seq = after ? *after : last_seq_;
  if (after && *after < last_seq_) {
    // The held commits after the point are encoded without the lock (up to --feed-history of
    // them: publish() on the writer thread would wait for it), from shared references that
    // outlive their leaving the history; then, under the lock again, what was published
    // meanwhile, and the subscriber is registered: nothing missed, nothing twice.
    // The references are dropped under the lock: publish() refills a commit the history let go
    // once it holds the only reference (use_count() under mu_), and our reads of it must come
    // before that (the lock orders them; the count alone does not).
    // The replay is held to the bound of a subscriber's unsent frames (--max-output / 2), as
    // publish() holds each commit: past it the subscriber has missed the rest, and is told
    // with a gap once it has read (probe31: a resume from 0 queued 780 MB for one peer).
    const auto encode = [&](const std::vector<Snapshot>& held) {
      for (const auto& [seq, changes] : held) {
        if (s.missed_from) return;
        const std::size_t room = max_unsent_ - std::min(max_unsent_, frames.size());
        const Encoded encoded = encode_for(s, seq, *changes, frames, room);
        if (encoded == Encoded::kSent) s.sent_seq = seq;
        if (encoded == Encoded::kTooLarge) s.missed_from = seq;
      }
    };
    std::vector<Snapshot> held;
    take_held_after(s, *after, frames, held);
    const std::uint64_t taken_up_to = last_seq_;
    lk.unlock();
    encode(held);
    lk.lock();
    held.clear();  // (frees the commits gone from the history meanwhile)
    // (Not once the replay was cut: the subscriber's gap, from the commit that did not fit,
    // covers these too, and comes first; review20.)
    if (last_seq_ > taken_up_to && !s.missed_from) {
      take_held_after(s, taken_up_to, frames, held);
      encode(held);
      held.clear();
    }
  }
  note_sent(s, false, 0, std::chrono::steady_clock::now());
  sink->push(std::move(frames));
  subs_.push_back(std::move(s));
  return std::nullopt;
}

void FeedHub::unsubscribe(const FeedSink* sink) {
  std::lock_guard lk(mu_);
  std::erase_if(subs_, [&](const Subscriber& s) { return s.sink.get() == sink; });
}

void FeedHub::unsubscribe_all() {
  std::vector<Subscriber> gone;
  {
    std::lock_guard lk(mu_);
    gone.swap(subs_);
  }
  // (The sessions, destroyed here if these were the last references, take their own locks.)
}

std::size_t FeedHub::subscribers() const {
  std::lock_guard lk(mu_);
  return subs_.size();
}

std::uint64_t FeedHub::last_seq() const {
  std::lock_guard lk(mu_);
  return last_seq_;
}

}  // namespace pasyn::server
