// pasyn-test-soak-client: the operations its worker threads run (soak_client.cpp lists them), each
// request's reply checked and each row key filed in the worker's ledger.
#include <array>
#include <cerrno>
#include <chrono>
#include <cstdint>
#include <cstring>
#include <future>
#include <mutex>
#include <optional>
#include <pasyn/pasyn.hpp>
#include <pasyn/proto/codec.hpp>
#include <random>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "soak_client.hpp"

namespace pasyn::soak {
namespace {

constexpr auto kRawTimeout = 5s;
/// Process 0 stalls the daemon now and then (Worker::stall): first after kFirstStall, then every
/// kStallEvery, holding an idle transaction for kStallHold.
constexpr auto kFirstStall = 2s;
constexpr auto kStallEvery = 8s;
constexpr auto kStallHold = 2500ms;
/// The conn of rows a raw socket tries to insert after its malformed frame.
constexpr std::int64_t kRawConn = -1;

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

}  // namespace

void run_worker(Soak& soak, std::uint64_t seed, Clock::time_point end, bool staller) {
  Worker(soak, seed).run(end, staller);
}

}  // namespace pasyn::soak
