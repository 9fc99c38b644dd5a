// IoBaton: which thread runs the server's io_context when the writer thread drives the I/O
// (--writer-io; on by default at synchronous=normal).
//
// Design. With the I/O on its own thread, every request crosses two threads on its way in (the
// I/O thread reads and parses it, then wakes the writer) and a batch's replies go out from the
// writer. Driving the I/O, the writer thread waits for requests in the io_context's own
// epoll_wait instead of on its condition variable, and between batches runs the ready handlers
// itself (reads, parsing, accepts, timers; at most 256 before each batch, so that a connection
// that never stops sending, e.g. PINGs, cannot hold the batches back), so that a request reaches
// SQLite and its reply leaves on the thread that read it: no hand-off, no wake-up of a second
// thread (the single-threaded group commit of pasyn-bench's groupcommit16 is this layout). The
// price is that while the writer runs a batch, nobody reads; so the I/O thread stands by, and takes
// the io_context over once the writer has been busy for kStall (a long statement, a checkpoint's
// fsyncs, a slow disk, a BEGIN waiting for another process's lock), so that accepts, PING,
// STATS, the watchdog and the drain timer never wait longer than that. When the writer comes
// back from its work it takes the io_context back (it posts a no-op to end the I/O thread's
// wait, and waits until that thread is out of its handler). Exactly one of the two threads runs
// io_context handlers at any time, and every hand-over goes through mu_, so the handlers need no
// other synchronisation than they had with one I/O thread (the writer's own direct sends and
// submit() keep theirs).
//
// At synchronous=full (auto: off) the I/O thread keeps the io_context, as without the baton:
// there a commit waits ~0.1 ms for an fsync, during which the I/O thread reads and parses the
// next requests; measured, the single thread gained with many writers and lost 8-10% for one
// pipelining connection (inflight1000; bench/RESULTS.md, twenty-second session).
//
// Thread-safety: writer_*() are called by the writer thread only, standby() by the I/O thread
// only (the one that called Server::run, once the server is set up; the writer thread starts
// just before it).
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <mutex>
#include <optional>

namespace boost::asio {
class io_context;  // declared only: writer.hpp includes this header without Asio
}  // namespace boost::asio

namespace pasyn::server {

class IoBaton {
 public:
  using Clock = std::chrono::steady_clock;
  /// How long the writer may be away from the io_context before the I/O thread takes it over.
  static constexpr auto kStall = std::chrono::milliseconds(2);
  /// The I/O thread looks at the writer every kStall while the writer has worked in the last
  /// kQuiet (nanoseconds), and sleeps until the writer's next batch after that: an idle daemon
  /// does not wake every kStall.
  static constexpr std::int64_t kQuiet = 1'000'000'000;

  explicit IoBaton(boost::asio::io_context& io) : io_(io) {}

  /// Writer thread: runs ready io_context handlers; with `wait`, first waits for one until
  /// `until` (nullopt: for ever). Takes the io_context back from the I/O thread first if that took
  /// it over. From its return until the next call the writer counts as busy (the stall clock
  /// runs). Returns false, having run nothing, once the io_context has stopped (the server is
  /// ending): the caller then waits as without the baton.
  bool writer_run(bool wait, std::optional<Clock::time_point> until);
  /// Writer thread, last: the I/O thread runs the io_context from now on, to its end.
  void writer_done();

  /// I/O thread: stands by (taking the io_context over while the writer is stuck) until
  /// writer_done(). The caller then runs the io_context to its end, as without the baton.
  void standby();

 private:
  template <typename T>
  struct SlotAllocator;
  struct Wake;
  void take_back();  // writer thread: waits until the I/O thread is out of the io_context
  void mark_busy();  // writer thread: starts the stall clock (and wakes a sleeping standby)

  boost::asio::io_context& io_;
  std::mutex mu_;
  std::condition_variable cv_;
  // The I/O thread may run the io_context: it is still setting up the server, took it over from
  // a stuck writer, or the writer ended. Written under mu_; read without it by the writer, whose
  // take_back() then waits under mu_ until the I/O thread is out (io_thread_in_).
  std::atomic<bool> io_thread_holds_{true};
  bool io_thread_in_ = true;  // GUARDED_BY(mu_): the I/O thread is inside the io_context now
  bool writer_done_ = false;  // GUARDED_BY(mu_)
  // Steady-clock nanoseconds since the writer last left the io_context to work; 0 while it is
  // inside (blocked in epoll_wait or running handlers). seq_cst with standby_asleep_ (below).
  std::atomic<std::int64_t> busy_since_ns_{0};
  // The I/O thread sleeps without a deadline (it saw the writer in the io_context): the writer
  // wakes it when it leaves for work (mark_busy), so that a stall is noticed. Both flags are
  // stored then the other loaded, seq_cst: at least one side sees the other's store.
  std::atomic<bool> standby_asleep_{false};
  std::atomic<std::int64_t> last_busy_ns_{0};  // when the writer last left for work
  // Where the no-op that take_back() posts lives (SlotAllocator, in io_baton.cpp).
  alignas(std::max_align_t) unsigned char slot_[128];
  std::atomic<bool> slot_used_{false};
};

}  // namespace pasyn::server
