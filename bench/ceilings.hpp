// pasyn-bench ceilings (SPEC §6): how fast this machine can do the work of the acked-writer rows
// with no pasyn at all, measured in the same run as the rows that divide by them.
//
// - ceiling_ipc16: a bare single-threaded epoll echo server and 16 synchronous clients (4
//   processes x 4 threads, one connection each), kCeilingMessageSize-byte messages: round trips
//   per second. No design answers 16 ack-waiting writers faster, with no SQLite work at all.
// - ceiling_durable16 = 16 / (t_commit16 + t_rtt): t_commit16 is the mean time one connection
//   takes to commit a 16-row transaction at synchronous=full in WAL, t_rtt the mean round trip of
//   the same echo server with one client. Each of 16 writers must send, wait for a commit that
//   follows its write, and read the ack.
// - groupcommit16 (not a ceiling: the bound of a design): the same echo server and the same 16
//   clients, but the server commits each epoll batch of requests as one transaction (one INSERT
//   per request, WAL, synchronous=full or normal) before replying. The leanest group commit:
//   what any acked-writer design built on SQLite can hope for on this machine. Two more designs
//   of it, so that the bound is not one design's: groupcommit16_gathered waits (up to
//   kGatherMicros) until every client has a request in the batch, so that all 16 share each
//   commit; groupcommit16_pipelined (synchronous=full only) commits at synchronous=NORMAL and
//   answers from a second thread after an fdatasync() of the WAL, so that one batch's sync
//   overlaps the next batch's round trips and INSERTs (flush pipelining).
#pragma once

#include "orchestrator.hpp"
#include "rows.hpp"

namespace pasyn_bench {

// SPEC §6: the message size of ceiling_ipc16 and t_rtt.
inline constexpr int kCeilingMessageSize = 64;
// SPEC §6: the writers (and rows per transaction) of the ceilings.
inline constexpr int kCeilingWriters = 16;

// What the echo server does between reading requests and replying: nothing, or commit them
// at synchronous=normal or full, or at normal with the replies sent after an fdatasync() of the
// WAL by a second thread (pipelined: as durable as full).
enum class EchoCommit { none, normal, full, pipelined };

// groupcommit16_gathered: how long a batch may wait for the clients not in it yet: about a
// commit at synchronous=full and the round trip of 16 clients on 2 cores.
inline constexpr int kGatherMicros = 100;

// The clients' throughput, and the server's commits (EchoCommit other than none).
struct EchoRun {
  Throughput clients;
  double rows = 0, commits = 0;
};

// `procs` processes x `threads` threads of synchronous echo clients against one bare epoll echo
// server for `seconds`; clients.per_second = round trips per second. With `commit`, the server
// commits each epoll batch of requests (one INSERT each) before replying; the rows it reports
// are checked against the database.
// With `gather_us` > 0, the server waits that long at most for every client to be in the batch.
EchoRun measure_echo(Context& ctx, int procs, int threads, double seconds,
                     EchoCommit commit = EchoCommit::none, int gather_us = 0);

// One client keeping `window` messages in flight until `ops` are echoed, against the same server
// (the bound of inflight1000 with `commit`); clients.per_second = echoes per second.
EchoRun measure_echo_pipelined(Context& ctx, std::int64_t window, std::int64_t ops,
                               EchoCommit commit);

// The designs of the group-commit server (see the top of this file).
enum class GroupDesign { serial, gathered, pipelined };

// groupcommit16 at synchronous=full (`full`) or normal, in `design` (pipelined: full only);
// groupcommit64: the serial one with 64 clients (4 processes x 16 threads), beside the bound of
// writers64_full.
EchoRun measure_group_commit16(Context& ctx, double seconds, bool full,
                               GroupDesign design = GroupDesign::serial);
EchoRun measure_group_commit64(Context& ctx, double seconds);

// One direct connection (WAL, synchronous=FULL) committing `rows`-row transactions back to back
// for `seconds`; per_second = transactions per second.
Throughput measure_commits(Context& ctx, int rows, double seconds);

// One measurement of both ceilings (the durable one only when `durable`).
struct Ceilings {
  double ipc16 = kNaN;  // round trips per second, 16 clients
  double ipc16_p50_us = kNaN, ipc16_p99_us = kNaN;
  double t_rtt_us = kNaN;       // mean, one client
  double t_commit16_us = kNaN;  // mean, one connection
  double durable16() const { return kCeilingWriters * 1e6 / (t_commit16_us + t_rtt_us); }
};
Ceilings measure_ceilings(Context& ctx, double seconds, bool durable);

}  // namespace pasyn_bench
