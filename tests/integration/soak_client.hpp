// The pieces of pasyn-test-soak-client (soak_client.cpp describes the program) that its sources
// share: the per-process state with the ledger and the reply checks (soak_client_ledger.cpp), the
// raw protocol peer and its malformed frames (soak_client_raw.cpp), and the workers' operations
// (soak_client_operations.cpp).
#pragma once

#include <array>
#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <exception>
#include <future>
#include <memory>
#include <mutex>
#include <optional>
#include <pasyn/pasyn.hpp>
#include <pasyn/proto/codec.hpp>
#include <random>
#include <string>
#include <utility>
#include <vector>

namespace pasyn::soak {

namespace proto = pasyn::proto;
using pasyn::Params;
using Clock = std::chrono::steady_clock;
using namespace std::chrono_literals;

/// Longer than any legitimate wait (--lock-wait is a few seconds): a reply that takes longer is
/// counted as lost. Also the client's request_timeout, for the blocking transaction calls.
inline constexpr auto kReplyBound = 30s;
inline constexpr int kSqliteConstraintUnique = 2067;
inline constexpr int kSqliteAbortRollback = 516;
inline constexpr const char* kInsert = "INSERT INTO acks (proc, conn, seq) VALUES (?, ?, ?)";

// ---- Ledger and reply checks (soak_client_ledger.cpp) -------------------------------------------

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

/// The state of one soak-client process: its connection slots, counters and ledger. Shared by
/// the worker threads: the counters are atomic, the ledger has its own mutex, each slot its own.
class Soak {
 public:
  Soak(std::string socket, std::int64_t proc, int connections)
      : socket_(std::move(socket)), proc_(proc), slots_(static_cast<std::size_t>(connections)) {
    options_.connect_timeout = 10s;
    options_.request_timeout = kReplyBound;
  }

  void open_all();

  const std::string& socket() const { return socket_; }
  std::int64_t proc() const { return proc_; }
  std::size_t slot_count() const { return slots_.size(); }
  Slot& slot(std::size_t i) { return slots_[i]; }
  const pasyn::ClientOptions& options() const { return options_; }
  Counters& counters() { return counters_; }

  /// `n` consecutive sequence numbers, unique in this process.
  std::int64_t reserve(std::int64_t n) { return next_seq_.fetch_add(n); }

  /// Counts an unexpected event and reports the first few on stderr.
  void unexpected(const std::string& what);

  /// Sorts the error a request ended with; `elapsed` tells a reply that never came (the
  /// client's request_timeout) from the daemon's --lock-wait.
  Outcome classify(std::exception_ptr error, Clock::duration elapsed, const std::string& what);

  /// Waits (bounded) for a reply; its value through `value`, or the sorted error.
  template <typename T>
  Outcome settle(std::future<T>& f, Clock::time_point sent, const std::string& what,
                 std::optional<T>& value) {
    return settle_with(f, sent, what, [&] { value = f.get(); });
  }
  Outcome settle(std::future<void>& f, Clock::time_point sent, const std::string& what) {
    return settle_with(f, sent, what, [&] { f.get(); });
  }

  void merge(Ledger&& l);

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

/// Every connection must still be served: one ping on each, all in flight together.
void ping_all(Soak& soak);

/// Writes the ledger to `path`, one "A|X|U conn seq" line per row key; false if it could not.
bool write_ledger(const Ledger& l, const char* path);

// ---- Raw sockets (soak_client_raw.cpp) ----------------------------------------------------------

/// A raw protocol peer: sends bytes, reads frames until a deadline or EOF.
class RawSocket {
 public:
  explicit RawSocket(const std::string& path);
  ~RawSocket();
  RawSocket(const RawSocket&) = delete;
  RawSocket& operator=(const RawSocket&) = delete;

  bool connected() const { return fd_ >= 0; }

  bool send(const std::vector<std::uint8_t>& bytes);

  struct Frame {
    std::uint8_t type;
    std::uint64_t request_id;
    std::vector<std::uint8_t> payload;
  };

  /// Reads frames into `frames` until `count` have arrived, EOF, or the deadline. Returns
  /// false on a stream that is not valid frames.
  bool read(std::vector<Frame>& frames, std::size_t count, Clock::time_point deadline);

  bool eof() const { return eof_; }

 private:
  int fd_;
  proto::FrameDecoder decoder_;
  bool eof_ = false;
};

inline constexpr int kMalformedKinds = 8;

/// A frame that breaks PROTOCOL.md in one of kMalformedKinds ways, each of which the daemon must
/// refuse with PROTOCOL: a length below 9, a length over `max_frame`, an unknown type (random
/// payload), EXECUTE whose SQL string runs past the payload, EXECUTE with an unknown value tag,
/// a second HELLO, PING with a payload of random bytes, EXECUTE with an empty idempotency key.
std::vector<std::uint8_t> malformed_frame(int kind, std::uint32_t max_frame, std::mt19937_64& rng);

// ---- Workers (soak_client_operations.cpp) -------------------------------------------------------

/// One worker thread's life: random operations on random connections of `soak` until `end`,
/// from a generator seeded with `seed`; a `staller` also stalls the daemon now and then. Files
/// its ledger into the soak's at the end.
void run_worker(Soak& soak, std::uint64_t seed, Clock::time_point end, bool staller);

}  // namespace pasyn::soak
