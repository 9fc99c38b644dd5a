// pasyn-test-soak-client: one client process of the soak test (soak_test.cpp).
//
// Usage: pasyn-test-soak-client SOCKET PROC_ID CONNECTIONS SECONDS SEED LEDGER
//
// Opens CONNECTIONS MultiplexedClient connections and keeps them all open. kWorkers threads then,
// for SECONDS, pick random connections and run random operations on them, inserting rows into
// acks(proc, conn, seq) with seq unique in the process:
//   burst        one async INSERT, INSERT returning the rowid, or PING on each of up to 16
//                connections at once
//   many         execute_many of 2-8 rows; a quarter repeat their first row and must fail whole
//   keyed        an INSERT with an idempotency key sent twice (pipelined, or retried on another
//                connection): both get its reply, the row is written once
//   transaction  BEGIN, 1-5 INSERTs, sometimes a read of its own rows, COMMIT or ROLLBACK
//   disconnect   BEGIN and INSERTs, then the connection is destroyed mid-transaction and a new
//                one opened in its slot: the daemon must roll the transaction back
//   bad frame    a raw socket: HELLO, a malformed frame, then a valid INSERT: the daemon must
//                answer with one PROTOCOL error and close, never running the INSERT
//   stall        (one worker of process 0, every 8 s) BEGIN and an INSERT, then silence past
//                the daemon's idle timeout: other writes wait, some past --lock-wait, until the
//                daemon rolls the transaction back and says so on the next INSERT
// Every reply is checked: each request is answered once, within kReplyBound, with the expected
// value or an expected typed error (TimeoutError when the daemon's --lock-wait ran out,
// OperationalError SQLITE_ABORT_ROLLBACK when it ended an idle transaction; the rows are then
// absent). At the end every connection must still answer a ping.
//
// LEDGER receives one line per row key, "A conn seq" (acknowledged: must be present once),
// "X conn seq" (must be absent) or "U conn seq" (outcome unknown: only after an unexpected
// error). Prints one summary line of name=value figures; exits 0 only if nothing unexpected
// happened (1 otherwise, 2 on bad usage, 3 if the connections cannot be opened).
// Size: over 800 lines: one program whose operations share the ledger and the reply checks.
#include <poll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <array>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <future>
#include <memory>
#include <mutex>
#include <optional>
#include <pasyn/pasyn.hpp>
#include <pasyn/proto/codec.hpp>
#include <random>
#include <string>
#include <thread>
#include <vector>

namespace {

namespace proto = pasyn::proto;
using pasyn::Params;
using Clock = std::chrono::steady_clock;
using namespace std::chrono_literals;

constexpr int kWorkers = 8;
/// Longer than any legitimate wait (--lock-wait is a few seconds): a reply that takes longer is
/// counted as lost. Also the client's request_timeout, for the blocking transaction calls.
constexpr auto kReplyBound = 30s;
constexpr auto kRawTimeout = 5s;
/// Process 0 stalls the daemon now and then (Worker::stall): first after kFirstStall, then every
/// kStallEvery, holding an idle transaction for kStallHold.
constexpr auto kFirstStall = 2s;
constexpr auto kStallEvery = 8s;
constexpr auto kStallHold = 2500ms;
constexpr int kSqliteConstraintUnique = 2067;
constexpr int kSqliteAbortRollback = 516;
constexpr const char* kInsert = "INSERT INTO acks (proc, conn, seq) VALUES (?, ?, ?)";
/// The conn of rows a raw socket tries to insert after its malformed frame.
constexpr std::int64_t kRawConn = -1;

struct Key {
  std::int64_t conn;
  std::int64_t seq;
};

/// The row keys one worker wrote or tried to write, by what must have become of them.
struct Ledger {
  std::vector<Key> acked;    // acknowledged: present exactly once
  std::vector<Key> absent;   // refused, rolled back or never run: absent
  std::vector<Key> unknown;  // an unexpected error left the outcome open
};

/// Counters of the whole process; the summary line prints them in this order.
struct Counters {
  std::atomic<long> ops{0}, inserts{0}, rowid_inserts{0}, pings{0}, many{0}, many_refused{0},
      keyed{0}, keyed_replays{0}, commits{0}, rollbacks{0}, tx_reads{0}, disconnects{0},
      stalls_ended{0}, stalls_survived{0}, bad_frames{0}, lock_timeouts{0}, tx_ended{0},
      unexpected{0};
};

/// One connection slot: the worker holding `mu` is the only user of `client`, which a
/// disconnect replaces.
struct Slot {
  std::mutex mu;
  std::unique_ptr<pasyn::MultiplexedClient> client;  // GUARDED_BY(mu)
};

/// What happened to one request.
enum class Outcome {
  kValue,        // answered with a value (checked by the caller)
  kLockTimeout,  // TimeoutError from the daemon: waited past --lock-wait, not run
  kTxEnded,      // the daemon had rolled the transaction back (idle timeout)
  kIntegrity,    // IntegrityError SQLITE_CONSTRAINT_UNIQUE
  kUnexpected,   // anything else, already reported
};

class Soak {
 public:
  Soak(std::string socket, std::int64_t proc, int connections)
      : socket_(std::move(socket)), proc_(proc), slots_(static_cast<std::size_t>(connections)) {
    options_.connect_timeout = 10s;
    options_.request_timeout = kReplyBound;
  }

  void open_all() {
    for (auto& slot : slots_) {
      slot.client = std::make_unique<pasyn::MultiplexedClient>(socket_, options_);
    }
  }

  const std::string& socket() const { return socket_; }
  std::int64_t proc() const { return proc_; }
  std::size_t slot_count() const { return slots_.size(); }
  Slot& slot(std::size_t i) { return slots_[i]; }
  const pasyn::ClientOptions& options() const { return options_; }
  Counters& counters() { return counters_; }

  /// `n` consecutive sequence numbers, unique in this process.
  std::int64_t reserve(std::int64_t n) { return next_seq_.fetch_add(n); }

  /// Counts an unexpected event and reports the first few on stderr.
  void unexpected(const std::string& what) {
    if (counters_.unexpected++ < 20) {
      std::fprintf(stderr, "soak-client %lld: unexpected: %s\n", static_cast<long long>(proc_),
                   what.c_str());
    }
  }

  /// Sorts the error a request ended with; `elapsed` tells a reply that never came (the
  /// client's request_timeout) from the daemon's --lock-wait.
  Outcome classify(std::exception_ptr error, Clock::duration elapsed, const std::string& what) {
    try {
      std::rethrow_exception(error);
    } catch (const pasyn::TimeoutError& e) {
      if (elapsed < kReplyBound) {
        ++counters_.lock_timeouts;
        return Outcome::kLockTimeout;
      }
      unexpected(what + ": no reply (lost?): " + e.what());
    } catch (const pasyn::OperationalError& e) {
      if (e.extended_code() == kSqliteAbortRollback) {
        ++counters_.tx_ended;
        return Outcome::kTxEnded;
      }
      unexpected(what + ": " + e.what());
    } catch (const pasyn::IntegrityError& e) {
      if (e.extended_code() == kSqliteConstraintUnique) return Outcome::kIntegrity;
      unexpected(what + ": " + e.what());
    } catch (const pasyn::Error& e) {
      unexpected(what + ": " + e.what());
    } catch (const std::exception& e) {
      unexpected(what + ": not a pasyn::Error: " + e.what());
    }
    return Outcome::kUnexpected;
  }

  /// Waits (bounded) for a reply; its value through `value`, or the sorted error.
  template <typename T>
  Outcome settle(std::future<T>& f, Clock::time_point sent, const std::string& what,
                 std::optional<T>& value) {
    return settle_with(f, sent, what, [&] { value = f.get(); });
  }
  Outcome settle(std::future<void>& f, Clock::time_point sent, const std::string& what) {
    return settle_with(f, sent, what, [&] { f.get(); });
  }

  void merge(Ledger&& l) {
    std::lock_guard lk(ledger_mu_);
    auto append = [](std::vector<Key>& to, std::vector<Key>& from) {
      to.insert(to.end(), from.begin(), from.end());
    };
    append(ledger_.acked, l.acked);
    append(ledger_.absent, l.absent);
    append(ledger_.unknown, l.unknown);
  }

  const Ledger& ledger() const { return ledger_; }

 private:
  template <typename Future, typename Get>
  Outcome settle_with(Future& f, Clock::time_point sent, const std::string& what, Get get) {
    if (f.wait_until(sent + kReplyBound) != std::future_status::ready) {
      unexpected(what + ": no reply within 30 s");
      return Outcome::kUnexpected;
    }
    try {
      get();
      return Outcome::kValue;
    } catch (...) {
      return classify(std::current_exception(), Clock::now() - sent, what);
    }
  }

  const std::string socket_;
  const std::int64_t proc_;
  pasyn::ClientOptions options_;
  std::vector<Slot> slots_;
  std::atomic<std::int64_t> next_seq_{0};
  Counters counters_;
  std::mutex ledger_mu_;
  Ledger ledger_;  // GUARDED_BY(ledger_mu_)
};

// ---- Raw sockets --------------------------------------------------------------------------------

int connect_unix(const std::string& path) {
  const int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return -1;
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  std::strncpy(addr.sun_path, path.c_str(), sizeof addr.sun_path - 1);
  if (::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
    ::close(fd);
    return -1;
  }
  return fd;
}

/// A raw protocol peer: sends bytes, reads frames until a deadline or EOF.
class RawSocket {
 public:
  explicit RawSocket(const std::string& path) : fd_(connect_unix(path)) {}
  ~RawSocket() {
    if (fd_ >= 0) ::close(fd_);
  }
  RawSocket(const RawSocket&) = delete;
  RawSocket& operator=(const RawSocket&) = delete;

  bool connected() const { return fd_ >= 0; }

  bool send(const std::vector<std::uint8_t>& bytes) {
    std::size_t sent = 0;
    while (sent < bytes.size()) {
      const ssize_t n = ::send(fd_, bytes.data() + sent, bytes.size() - sent, MSG_NOSIGNAL);
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) return false;
      sent += static_cast<std::size_t>(n);
    }
    return true;
  }

  struct Frame {
    std::uint8_t type;
    std::uint64_t request_id;
    std::vector<std::uint8_t> payload;
  };

  /// Reads frames into `frames` until `count` have arrived, EOF, or the deadline. Returns
  /// false on a stream that is not valid frames.
  bool read(std::vector<Frame>& frames, std::size_t count, Clock::time_point deadline) {
    while (frames.size() < count && !eof_) {
      const auto left =
          std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now()).count();
      if (left <= 0) return true;
      pollfd p{fd_, POLLIN, 0};
      const int ready = ::poll(&p, 1, static_cast<int>(left));
      if (ready < 0 && errno == EINTR) continue;
      if (ready <= 0) return ready == 0;
      auto space = decoder_.prepare(4096);
      const ssize_t n = ::recv(fd_, space.data(), space.size(), 0);
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) {  // EOF, or ECONNRESET when the daemon closed with our bytes unread
        eof_ = true;
        break;
      }
      decoder_.commit(static_cast<std::size_t>(n));
      proto::FrameView view;
      for (;;) {
        const auto status = decoder_.next(view);
        if (status == proto::FrameDecoder::Status::kNeedMore) break;
        if (status == proto::FrameDecoder::Status::kError) return false;
        frames.push_back({view.type, view.request_id, {view.payload.begin(), view.payload.end()}});
      }
    }
    return true;
  }

  bool eof() const { return eof_; }

 private:
  int fd_;
  proto::FrameDecoder decoder_;
  bool eof_ = false;
};

void append_u32(std::vector<std::uint8_t>& out, std::uint32_t v) {
  for (int i = 0; i < 4; ++i) out.push_back(static_cast<std::uint8_t>(v >> (8 * i)));
}

void append_random(std::vector<std::uint8_t>& out, std::size_t n, std::mt19937_64& rng) {
  for (std::size_t i = 0; i < n; ++i) out.push_back(static_cast<std::uint8_t>(rng()));
}

constexpr int kMalformedKinds = 8;
constexpr std::array<std::uint8_t, 12> kUnknownTypes{0x00, 0x0F, 0x10, 0x1F, 0x28, 0x42,
                                                     0x4C, 0x63, 0x7F, 0x81, 0x8F, 0xFF};

/// A frame that breaks PROTOCOL.md in one of kMalformedKinds ways, each of which the daemon must
/// refuse with PROTOCOL: a length below 9, a length over `max_frame`, an unknown type (random
/// payload), EXECUTE whose SQL string runs past the payload, EXECUTE with an unknown value tag,
/// a second HELLO, PING with a payload of random bytes, EXECUTE with an empty idempotency key.
std::vector<std::uint8_t> malformed_frame(int kind, std::uint32_t max_frame, std::mt19937_64& rng) {
  std::vector<std::uint8_t> out;
  const std::uint64_t id = 1 + rng() % 1000000;
  switch (kind) {
    case 0:
      append_u32(out, static_cast<std::uint32_t>(rng() % proto::kMinLength));
      append_random(out, rng() % 16, rng);
      break;
    case 1: {  // only the length field: the daemon must refuse it before any body
      const std::uint64_t over = std::uint64_t{max_frame} - proto::kLengthFieldSize + 1;
      append_u32(out, static_cast<std::uint32_t>(over + rng() % (0x100000000ull - over)));
      break;
    }
    case 2: {
      proto::FrameWriter w(out, static_cast<proto::MsgType>(kUnknownTypes[rng() % 12]), id);
      for (std::size_t i = rng() % 64; i > 0; --i) w.u8(static_cast<std::uint8_t>(rng()));
      w.finish();
      break;
    }
    case 3: {
      proto::FrameWriter w(out, proto::MsgType::kExecute, id);
      const std::uint32_t follows = static_cast<std::uint32_t>(rng() % 32);
      w.u32(follows + 1 + static_cast<std::uint32_t>(rng() % 1000));
      for (std::uint32_t i = 0; i < follows; ++i) w.u8('x');
      w.finish();
      break;
    }
    case 4: {
      proto::FrameWriter w(out, proto::MsgType::kExecute, id);
      w.string(kInsert);
      w.u32(1);
      w.u8(static_cast<std::uint8_t>(5 + rng() % 251));  // tags 0-4 exist
      w.i64(0);
      w.finish();
      break;
    }
    case 5:
      proto::encode_hello(out, proto::Hello{});
      break;
    case 6: {
      proto::FrameWriter w(out, proto::MsgType::kPing, id);
      for (std::size_t i = 1 + rng() % 64; i > 0; --i) w.u8(static_cast<std::uint8_t>(rng()));
      w.finish();
      break;
    }
    default: {
      proto::FrameWriter w(
          out,
          static_cast<proto::MsgType>(static_cast<std::uint8_t>(proto::MsgType::kExecute) |
                                      proto::kIdempotent),
          id);
      w.string("");  // a key is 1 to 256 bytes
      w.string(kInsert);
      w.params({});
      w.finish();
      break;
    }
  }
  return out;
}

// ---- Workers ------------------------------------------------------------------------------------

class Worker {
 public:
  Worker(Soak& soak, std::uint64_t seed) : soak_(soak), c_(soak.counters()), rng_(seed) {}

  /// Runs random operations until `end`; a `staller` also stalls every kStallEvery.
  void run(Clock::time_point end, bool staller) {
    // Weights, out of 100.
    constexpr int kBurst = 35, kMany = 10, kKeyed = 10, kTransaction = 25, kDisconnect = 10;
    auto next_stall = Clock::now() + kFirstStall;
    while (Clock::now() < end) {
      ++c_.ops;
      if (staller && Clock::now() >= next_stall) {
        stall();
        next_stall += kStallEvery;
        continue;
      }
      const int pick = static_cast<int>(rng_() % 100);
      if (pick < kBurst) {
        burst();
      } else if (pick < kBurst + kMany) {
        many();
      } else if (pick < kBurst + kMany + kKeyed) {
        keyed();
      } else if (pick < kBurst + kMany + kKeyed + kTransaction) {
        transaction();
      } else if (pick < kBurst + kMany + kKeyed + kTransaction + kDisconnect) {
        disconnect();
      } else {
        bad_frame();
      }
    }
    soak_.merge(std::move(ledger_));
  }

 private:
  using Lock = std::unique_lock<std::mutex>;

  /// Locks a random slot that no other worker holds, or, after a few tries, waits for one.
  Lock take_slot(std::size_t& index) {
    for (int attempt = 0;; ++attempt) {
      index = rng_() % soak_.slot_count();
      Lock lock(soak_.slot(index).mu, std::try_to_lock);
      if (lock.owns_lock()) return lock;
      if (attempt == 8) return Lock(soak_.slot(index).mu);
    }
  }

  /// The slot's client, reopened first if a disconnect could not reopen it.
  pasyn::MultiplexedClient* client_of(std::size_t index) {
    auto& slot = soak_.slot(index);
    if (!slot.client) reopen(index);
    return slot.client.get();
  }

  void reopen(std::size_t index) {
    try {
      soak_.slot(index).client =
          std::make_unique<pasyn::MultiplexedClient>(soak_.socket(), soak_.options());
    } catch (const pasyn::Error& e) {
      soak_.unexpected("cannot reopen connection " + std::to_string(index) + ": " + e.what());
    }
  }

  Params row(std::size_t conn, std::int64_t seq) const {
    return {soak_.proc(), static_cast<std::int64_t>(conn), seq};
  }

  static std::string name(const char* op, std::size_t conn, std::int64_t seq) {
    return std::string(op) + " conn " + std::to_string(conn) + " seq " + std::to_string(seq);
  }

  /// What must have become of a row.
  enum class Fate { kPresent, kAbsent, kUnknown };

  /// The fate of the row of a request that ended with `outcome` (a value the caller checked
  /// means the row was written; an expected refusal means it was not).
  static Fate fate(Outcome outcome) {
    switch (outcome) {
      case Outcome::kValue:
        return Fate::kPresent;
      case Outcome::kLockTimeout:
      case Outcome::kTxEnded:
      case Outcome::kIntegrity:
        return Fate::kAbsent;
      case Outcome::kUnexpected:
        break;
    }
    return Fate::kUnknown;
  }

  void file(Fate f, Key key) {
    if (f == Fate::kPresent) {
      ledger_.acked.push_back(key);
    } else if (f == Fate::kAbsent) {
      ledger_.absent.push_back(key);
    } else {
      ledger_.unknown.push_back(key);
    }
  }
  void file(Outcome outcome, Key key) { file(fate(outcome), key); }

  /// The outcome of a transaction that failed, once `begun` or not: only BEGIN may wait for
  /// the lock, and its fresh keys cannot collide.
  Outcome failed_transaction(Outcome o, bool begun, const std::string& what) {
    if (o == Outcome::kIntegrity) {
      soak_.unexpected(what + ": UNIQUE constraint failed on fresh keys");
      return Outcome::kUnexpected;
    }
    if (o == Outcome::kLockTimeout && begun) {
      soak_.unexpected(what + ": TimeoutError inside its own transaction");
      return Outcome::kUnexpected;
    }
    return o;
  }

  /// One request on each of up to 16 free connections, all in flight together.
  void burst() {
    struct InFlight {
      Lock lock;
      std::size_t conn;
      int kind;  // 0 INSERT, 1 INSERT returning the rowid, 2 PING
      std::int64_t seq;
      Clock::time_point sent;
      std::future<std::int64_t> changes;
      std::future<void> pong;
    };
    std::vector<InFlight> flights;
    const int n = 1 + static_cast<int>(rng_() % 16);
    for (int i = 0; i < n; ++i) {
      const std::size_t conn = rng_() % soak_.slot_count();
      Lock lock(soak_.slot(conn).mu, std::try_to_lock);
      if (!lock.owns_lock()) continue;  // another worker uses it; never wait holding slots
      auto* client = client_of(conn);
      if (client == nullptr) continue;
      const int roll = static_cast<int>(rng_() % 10);
      InFlight f{std::move(lock), conn, roll < 8 ? 0 : roll < 9 ? 1 : 2, 0, Clock::now(), {}, {}};
      try {
        if (f.kind == 2) {
          f.pong = client->ping_async();
        } else {
          f.seq = soak_.reserve(1);
          f.changes = f.kind == 0
                          ? client->execute_async(kInsert, row(conn, f.seq))
                          : client->execute_returning_rowid_async(kInsert, row(conn, f.seq));
        }
      } catch (...) {
        const auto o =
            soak_.classify(std::current_exception(), {}, name("burst send", conn, f.seq));
        if (f.kind != 2) file(o, {static_cast<std::int64_t>(conn), f.seq});
        continue;
      }
      flights.push_back(std::move(f));
    }
    for (auto& f : flights) {
      const Key key{static_cast<std::int64_t>(f.conn), f.seq};
      if (f.kind == 2) {
        if (soak_.settle(f.pong, f.sent, name("ping", f.conn, 0)) == Outcome::kValue) ++c_.pings;
        continue;
      }
      std::optional<std::int64_t> value;
      const std::string what = name(f.kind == 0 ? "insert" : "rowid insert", f.conn, f.seq);
      auto outcome = soak_.settle(f.changes, f.sent, what, value);
      if (outcome == Outcome::kValue && (f.kind == 0 ? *value != 1 : *value <= 0)) {
        soak_.unexpected(what + ": answered " + std::to_string(*value));
        outcome = Outcome::kUnexpected;
      }
      if (outcome == Outcome::kValue) ++(f.kind == 0 ? c_.inserts : c_.rowid_inserts);
      file(outcome, key);
    }
  }

  /// execute_many of 2-8 rows, atomic; a quarter of them repeat their first row at the end and
  /// must fail whole with SQLITE_CONSTRAINT_UNIQUE.
  void many() {
    std::size_t conn;
    Lock lock = take_slot(conn);
    auto* client = client_of(conn);
    if (client == nullptr) return;
    const std::int64_t rows = 2 + static_cast<std::int64_t>(rng_() % 7);
    const bool poisoned = rng_() % 4 == 0;
    const std::int64_t first = soak_.reserve(rows);
    std::vector<pasyn::Params> batch;
    for (std::int64_t i = 0; i < rows; ++i) batch.push_back(row(conn, first + i));
    if (poisoned) batch.push_back(row(conn, first));
    const std::string what = name(poisoned ? "poisoned many" : "many", conn, first);
    const auto sent = Clock::now();
    Outcome outcome;
    std::optional<std::int64_t> value;
    try {
      auto f = client->execute_many_async(kInsert, batch);
      outcome = soak_.settle(f, sent, what, value);
    } catch (...) {
      outcome = soak_.classify(std::current_exception(), {}, what);
    }
    if (outcome == Outcome::kValue && (poisoned || *value != rows)) {
      soak_.unexpected(what + ": answered " + std::to_string(*value));
      outcome = Outcome::kUnexpected;
    } else if (outcome == Outcome::kIntegrity && !poisoned) {
      soak_.unexpected(what + ": UNIQUE constraint failed on fresh keys");
      outcome = Outcome::kUnexpected;
    }
    if (outcome == Outcome::kValue) ++c_.many;
    if (outcome == Outcome::kIntegrity) ++c_.many_refused;
    for (std::int64_t i = 0; i < rows; ++i) {
      file(outcome, {static_cast<std::int64_t>(conn), first + i});
    }
  }

  /// An INSERT with an idempotency key, sent twice: pipelined on one connection, or retried
  /// on another after the first reply. Each attempt must answer 1 (the second from the record)
  /// or time out in the lock wait; the row must be written exactly once if either succeeded.
  void keyed() {
    std::size_t conn;
    Lock lock = take_slot(conn);
    auto* client = client_of(conn);
    if (client == nullptr) return;
    const std::int64_t seq = soak_.reserve(1);
    const pasyn::WriteOptions key{"soak-" + std::to_string(soak_.proc()) + "-" +
                                  std::to_string(seq)};
    const std::string what = name("keyed insert", conn, seq);
    const Params params = row(conn, seq);
    const bool pipelined = rng_() % 2 == 0;
    std::array<Outcome, 2> outcomes{};
    std::array<std::optional<std::int64_t>, 2> values;
    try {
      const auto sent = Clock::now();
      auto first = client->execute_async(kInsert, params, key);
      if (pipelined) {
        auto second = client->execute_async(kInsert, params, key);
        outcomes[0] = soak_.settle(first, sent, what, values[0]);
        outcomes[1] = soak_.settle(second, sent, what + " (replay)", values[1]);
      } else {
        outcomes[0] = soak_.settle(first, sent, what, values[0]);
        lock.unlock();
        std::size_t other;
        Lock other_lock = take_slot(other);
        auto* retry_client = client_of(other);
        if (retry_client == nullptr) return file(Outcome::kUnexpected, {std::int64_t(conn), seq});
        const auto resent = Clock::now();
        auto second = retry_client->execute_async(kInsert, params, key);
        outcomes[1] = soak_.settle(second, resent, what + " (retried)", values[1]);
      }
    } catch (...) {
      soak_.classify(std::current_exception(), {}, what + " (send)");
      return file(Outcome::kUnexpected, {std::int64_t(conn), seq});
    }
    for (int i = 0; i < 2; ++i) {
      if (outcomes[i] == Outcome::kValue && *values[i] != 1) {
        soak_.unexpected(what + ": answered " + std::to_string(*values[i]));
        outcomes[i] = Outcome::kUnexpected;
      } else if (outcomes[i] == Outcome::kIntegrity) {  // the key did not stop a second run
        soak_.unexpected(what + ": the same key ran twice (UNIQUE constraint failed)");
        outcomes[i] = Outcome::kUnexpected;
      }
    }
    const Key k{static_cast<std::int64_t>(conn), seq};
    if (outcomes[0] == Outcome::kUnexpected || outcomes[1] == Outcome::kUnexpected) {
      return file(Outcome::kUnexpected, k);
    }
    if (outcomes[0] == Outcome::kValue && outcomes[1] == Outcome::kValue) ++c_.keyed_replays;
    ++c_.keyed;
    const bool applied = outcomes[0] == Outcome::kValue || outcomes[1] == Outcome::kValue;
    file(applied ? Fate::kPresent : Fate::kAbsent, k);
  }

  /// BEGIN, 1-5 INSERTs, sometimes a read of its own rows, then COMMIT (7 in 10) or ROLLBACK.
  void transaction() {
    std::size_t conn;
    Lock lock = take_slot(conn);
    auto* client = client_of(conn);
    if (client == nullptr) return;
    const std::int64_t rows = 1 + static_cast<std::int64_t>(rng_() % 5);
    const std::int64_t first = soak_.reserve(rows);
    const bool commit = rng_() % 10 < 7;
    const std::string what = name("transaction", conn, first);
    auto file_all = [&](auto o) {
      for (std::int64_t i = 0; i < rows; ++i) file(o, {static_cast<std::int64_t>(conn), first + i});
    };
    auto sent = Clock::now();
    bool begun = false;
    try {
      auto tx = client->begin();
      begun = true;
      for (std::int64_t i = 0; i < rows; ++i) {
        sent = Clock::now();
        if (const auto n = tx.execute(kInsert, row(conn, first + i)); n != 1) {
          soak_.unexpected(what + ": insert answered " + std::to_string(n));
          return file_all(Outcome::kUnexpected);
        }
      }
      if (rng_() % 4 == 0) {
        sent = Clock::now();
        const auto own =
            tx.execute_fetchone("SELECT count(*) FROM acks WHERE proc = ? AND seq BETWEEN ? AND ?",
                                {soak_.proc(), first, first + rows - 1});
        if (!own || std::get<std::int64_t>(own->at(0)) != rows) {
          soak_.unexpected(what + ": does not read its own " + std::to_string(rows) + " rows");
          return file_all(Outcome::kUnexpected);
        }
        ++c_.tx_reads;
      }
      sent = Clock::now();
      if (commit) {
        tx.commit();
        ++c_.commits;
        return file_all(Outcome::kValue);
      }
      tx.rollback();
      ++c_.rollbacks;
      return file_all(Fate::kAbsent);
    } catch (...) {
      const auto o = soak_.classify(std::current_exception(), Clock::now() - sent, what);
      file_all(failed_transaction(o, begun, what));
    }
  }

  /// BEGIN and 1-3 INSERTs, then the client is destroyed with the transaction open and a new
  /// connection takes its slot. The daemon must roll the rows back.
  void disconnect() {
    std::size_t conn;
    Lock lock = take_slot(conn);
    auto& slot = soak_.slot(conn);
    if (client_of(conn) == nullptr) return;
    const std::int64_t rows = 1 + static_cast<std::int64_t>(rng_() % 3);
    const std::int64_t first = soak_.reserve(rows);
    const std::string what = name("disconnect", conn, first);
    Fate rows_fate = Fate::kAbsent;  // rolled back when the connection closed
    auto sent = Clock::now();
    bool begun = false;
    try {
      auto tx = slot.client->begin();
      begun = true;
      for (std::int64_t i = 0; i < rows; ++i) {
        sent = Clock::now();
        if (const auto n = tx.execute(kInsert, row(conn, first + i)); n != 1) {
          soak_.unexpected(what + ": insert answered " + std::to_string(n));
          rows_fate = Fate::kUnknown;
        }
      }
      slot.client.reset();  // closes the socket; then ~Transaction cannot roll back itself
    } catch (...) {
      const auto o = soak_.classify(std::current_exception(), Clock::now() - sent, what);
      if (failed_transaction(o, begun, what) == Outcome::kUnexpected) rows_fate = Fate::kUnknown;
    }
    slot.client.reset();
    ++c_.disconnects;
    for (std::int64_t i = 0; i < rows; ++i) {
      file(rows_fate, {static_cast<std::int64_t>(conn), first + i});
    }
    reopen(conn);
  }

  /// BEGIN and an INSERT, then silence for kStallHold, longer than the daemon's
  /// --transaction-idle-timeout in the soak test: every other write waits meanwhile (and fails
  /// with TimeoutError past --lock-wait, without running), until the daemon rolls the idle
  /// transaction back; the next INSERT in it must then fail with SQLITE_ABORT_ROLLBACK. Should
  /// the daemon still hold the transaction, it is committed instead.
  void stall() {
    std::size_t conn;
    Lock lock = take_slot(conn);
    auto* client = client_of(conn);
    if (client == nullptr) return;
    const std::int64_t first = soak_.reserve(2);
    const std::string what = name("stalled transaction", conn, first);
    auto file_both = [&](auto o) {
      for (std::int64_t i = 0; i < 2; ++i) file(o, {static_cast<std::int64_t>(conn), first + i});
    };
    auto sent = Clock::now();
    bool begun = false;
    try {
      auto tx = client->begin();
      begun = true;
      sent = Clock::now();
      tx.execute(kInsert, row(conn, first));
      std::this_thread::sleep_for(kStallHold);
      sent = Clock::now();
      tx.execute(kInsert, row(conn, first + 1));
      tx.commit();
      ++c_.stalls_survived;
      file_both(Outcome::kValue);
    } catch (...) {
      const auto o = soak_.classify(std::current_exception(), Clock::now() - sent, what);
      if (o == Outcome::kTxEnded) ++c_.stalls_ended;
      file_both(failed_transaction(o, begun, what));
    }
  }

  /// HELLO, a malformed frame and a valid INSERT behind it on a raw socket: exactly HELLO_OK,
  /// one ERROR (request id 0, pasyn PROTOCOL) and EOF must come back; the INSERT never runs.
  void bad_frame() {
    const std::int64_t seq = soak_.reserve(1);
    const int kind = static_cast<int>(rng_() % kMalformedKinds);
    const std::string what = "malformed frame of kind " + std::to_string(kind);
    const Key key{kRawConn, seq};
    RawSocket raw(soak_.socket());
    if (!raw.connected()) {
      soak_.unexpected(what + ": cannot connect: " + std::strerror(errno));
      return file(Outcome::kUnexpected, key);
    }
    const auto deadline = Clock::now() + kRawTimeout;
    std::vector<std::uint8_t> bytes;
    proto::encode_hello(bytes, proto::Hello{});
    std::vector<RawSocket::Frame> frames;
    proto::HelloOk hello_ok;
    std::string why;
    if (!raw.send(bytes) || !raw.read(frames, 1, deadline) || frames.size() != 1 ||
        frames[0].type != static_cast<std::uint8_t>(proto::MsgType::kHelloOk) ||
        !proto::decode_hello_ok(frames[0].payload, hello_ok, why)) {
      soak_.unexpected(what + ": no HELLO_OK " + why);
      return file(Outcome::kUnexpected, key);
    }
    bytes = malformed_frame(kind, hello_ok.max_frame, rng_);
    proto::encode_statement(bytes, proto::MsgType::kExecute, 1, kInsert,
                            {soak_.proc(), kRawConn, seq});
    frames.clear();
    // The daemon may close before it has read all of it: a failed send is no error here.
    raw.send(bytes);
    // Up to a second frame (one too many), EOF or the deadline.
    const bool valid = raw.read(frames, 2, deadline);
    proto::ErrorReply e;
    if (!valid || frames.size() != 1 || !raw.eof() ||
        frames[0].type != static_cast<std::uint8_t>(proto::MsgType::kError) ||
        frames[0].request_id != 0 || !proto::decode_error(frames[0].payload, e, why) ||
        e.domain != proto::ErrorDomain::kPasyn ||
        e.code != static_cast<std::int32_t>(proto::PasynCode::kProtocol)) {
      soak_.unexpected(what + ": expected one PROTOCOL error and EOF; got " +
                       std::to_string(frames.size()) + " frames" +
                       (frames.empty() ? "" : ", first of type " + std::to_string(frames[0].type)) +
                       (raw.eof() ? ", EOF" : ", no EOF") + (valid ? "" : ", undecodable bytes"));
      return file(Outcome::kUnexpected, key);
    }
    ++c_.bad_frames;
    file(Fate::kAbsent, key);
  }

  Soak& soak_;
  Counters& c_;
  std::mt19937_64 rng_;
  Ledger ledger_;
};

/// Every connection must still be served: one ping on each, all in flight together.
void ping_all(Soak& soak) {
  std::vector<std::pair<std::size_t, std::future<void>>> pongs;
  const auto sent = Clock::now();
  for (std::size_t i = 0; i < soak.slot_count(); ++i) {
    auto& client = soak.slot(i).client;
    if (!client) {
      soak.unexpected("connection " + std::to_string(i) + " is missing at the end");
      continue;
    }
    try {
      pongs.emplace_back(i, client->ping_async());
    } catch (...) {
      soak.classify(std::current_exception(), {}, "final ping " + std::to_string(i));
    }
  }
  for (auto& [i, f] : pongs) {
    soak.settle(f, sent, "final ping " + std::to_string(i));
  }
}

bool write_ledger(const Ledger& l, const char* path) {
  std::ofstream out(path, std::ios::trunc);
  auto put = [&](char tag, const std::vector<Key>& keys) {
    for (const auto& k : keys) out << tag << ' ' << k.conn << ' ' << k.seq << '\n';
  };
  put('A', l.acked);
  put('X', l.absent);
  put('U', l.unknown);
  out.flush();
  return static_cast<bool>(out);
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 7) {
    std::fprintf(stderr, "usage: %s SOCKET PROC_ID CONNECTIONS SECONDS SEED LEDGER\n", argv[0]);
    return 2;
  }
  const std::int64_t proc = std::atoll(argv[2]);
  const int connections = std::atoi(argv[3]);
  const int seconds = std::atoi(argv[4]);
  const std::uint64_t seed = std::strtoull(argv[5], nullptr, 10);
  if (connections <= 0 || seconds <= 0) {
    std::fprintf(stderr, "soak-client: CONNECTIONS and SECONDS must be positive\n");
    return 2;
  }
  // One descriptor per connection, plus the raw sockets.
  if (rlimit files{}; ::getrlimit(RLIMIT_NOFILE, &files) == 0 && files.rlim_cur < files.rlim_max) {
    files.rlim_cur = files.rlim_max;
    ::setrlimit(RLIMIT_NOFILE, &files);
  }

  Soak soak(argv[1], proc, connections);
  try {
    soak.open_all();
  } catch (const pasyn::Error& e) {
    std::fprintf(stderr, "soak-client %lld: cannot open %d connections: %s\n",
                 static_cast<long long>(proc), connections, e.what());
    return 3;
  }

  const auto end = Clock::now() + std::chrono::seconds(seconds);
  std::vector<std::thread> workers;
  for (int t = 0; t < kWorkers; ++t) {
    workers.emplace_back([&soak, end, seed, proc, t] {
      Worker(soak, seed * 1000003u + static_cast<std::uint64_t>(t)).run(end, proc == 0 && t == 0);
    });
  }
  for (auto& w : workers) w.join();
  ping_all(soak);

  const Ledger& l = soak.ledger();
  if (!write_ledger(l, argv[6])) {
    soak.unexpected(std::string("cannot write the ledger ") + argv[6]);
  }
  const Counters& c = soak.counters();
  std::printf(
      "soak-client proc=%lld connections=%d ops=%ld acked=%zu absent=%zu unknown=%zu "
      "inserts=%ld rowid_inserts=%ld pings=%ld many=%ld many_refused=%ld keyed=%ld "
      "keyed_replays=%ld commits=%ld rollbacks=%ld tx_reads=%ld disconnects=%ld stalls_ended=%ld "
      "stalls_survived=%ld bad_frames=%ld "
      "lock_timeouts=%ld tx_ended=%ld unexpected=%ld\n",
      static_cast<long long>(proc), connections, c.ops.load(), l.acked.size(), l.absent.size(),
      l.unknown.size(), c.inserts.load(), c.rowid_inserts.load(), c.pings.load(), c.many.load(),
      c.many_refused.load(), c.keyed.load(), c.keyed_replays.load(), c.commits.load(),
      c.rollbacks.load(), c.tx_reads.load(), c.disconnects.load(), c.stalls_ended.load(),
      c.stalls_survived.load(), c.bad_frames.load(), c.lock_timeouts.load(), c.tx_ended.load(),
      c.unexpected.load());
  std::fflush(stdout);
  return c.unexpected == 0 ? 0 : 1;
}
