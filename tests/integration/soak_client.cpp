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
//
// Sources: this file (arguments, the threads, the summary line); soak_client_operations.cpp (the
// operations); soak_client_ledger.cpp (the ledger and the reply checks); soak_client_raw.cpp (the
// raw socket and its malformed frames); soak_client.hpp (what they share).
#include <sys/resource.h>

#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <pasyn/pasyn.hpp>
#include <string>
#include <thread>
#include <vector>

#include "soak_client.hpp"

using namespace pasyn::soak;

namespace {

constexpr int kWorkers = 8;

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
      run_worker(soak, seed * 1000003u + static_cast<std::uint64_t>(t), end, proc == 0 && t == 0);
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
