// MultiplexedClient::Impl: the connection, its I/O thread and the pending requests. Declared
// here with the calls' entry points (submit, wait); the connection's life is defined in
// client_connection.cpp, the sending, reading and delivering in client_io.cpp.
//
// Design
// ------
// * Calling threads encode their request straight into the shared outbox under mu_, register a
//   completion under the request id, and, if no write is scheduled, schedule one on the I/O
//   thread. The I/O thread swaps the whole outbox out and writes it with one async_write, then
//   looks again; it clears `write_scheduled_` only under mu_ and only when the outbox is empty,
//   so a request appended while a write is in flight is always sent (no lost wake-up), and
//   requests from many threads are coalesced into few syscalls.
// * The I/O thread reads replies, matches them to completions by id and completes them outside
//   the lock. Completions only fulfil promises or wake waiters; no user code runs on the I/O
//   thread. A synchronous call waits on a Waiter on its own stack, which the pending entry
//   points at; the pending table's nodes come from a pool kept under mu_, and the outbox keeps
//   its capacity, so a synchronous call allocates nothing in the steady state. An asynchronous
//   call's completion holds its promise by value (it costs the promise's shared state).
// * A reply still crosses one thread hop: the I/O thread reads it and wakes the waiting caller
//   (a futex wake). Callers do not read the socket themselves.
// * A synchronous caller that gives up (its Timeout, or request_timeout) turns its pending entry
//   into one that discards the reply, unless the entry was already taken for delivery; then it
//   waits for that delivery, which is imminent, so that nothing ever points at a waiter that is
//   gone.
// * At most ClientOptions::max_in_flight requests are pending; submit() waits for a slot.
//   A transaction's requests go out on the connection that began it or not at all. One bound
//   per call (bound_of: its own Timeout, else request_timeout) limits the slot wait and the
//   reply wait together: both wait until the same deadline.
// * fork(): pthread_atfork handlers (Registry) hold every client's lock across fork() and mark
//   it forked in the child, whose first call abandons the parent's socket, loop and thread
//   untouched (Io) and reconnects.
// * When the connection fails, every pending completion fails with ConnectionLostError at once.
//   The next call reconnects (with a backoff while the daemon stays away); the requests of the
//   old connection are never re-sent, and handlers of the old socket are recognised by their
//   generation and ignored.
#pragma once

#include <poll.h>
#include <pthread.h>
#include <sqlite3.h>
#include <unistd.h>

#include <atomic>
#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/local/stream_protocol.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/read.hpp>
#include <boost/asio/write.hpp>
#include <chrono>
#include <condition_variable>
#include <cstring>
#include <memory_resource>
#include <mutex>
#include <optional>
#include <pasyn/client.hpp>
#include <pasyn/proto/codec.hpp>
#include <pasyn/proto/socket_send.hpp>
#include <thread>
#include <unordered_map>
#include <unordered_set>

#include "handshake.hpp"
#include "process.hpp"
#include "reply.hpp"
#include "waiter.hpp"

// An out-of-line member of MultiplexedClient::Impl: not exported. Impl is nested in an exported
// class, so its members would otherwise join the library's ABI (scripts/abi-check.sh).
#define PASYN_INTERNAL __attribute__((visibility("hidden")))

namespace pasyn {
namespace detail {

namespace asio = boost::asio;
using boost::system::error_code;
using local = asio::local::stream_protocol;

// Reads offer 4 KiB, or 64 KiB right after a read that filled what it was offered; a frame in
// progress always gets room for all of it.
inline constexpr std::size_t kSmallRead = 4096;
inline constexpr std::size_t kLargeRead = 64 * 1024;

}  // namespace detail

class MultiplexedClient::Impl : public std::enable_shared_from_this<Impl> {
 public:
  /// One blocking call's bound (see bound_of): its length, for messages, and its deadline,
  /// time_point::max() when unbounded.
  struct CallBound {
    std::chrono::milliseconds timeout;
    std::chrono::steady_clock::time_point deadline;
  };

  /// What submit() reports about a request it sent.
  struct Sent {
    std::uint64_t id = 0;          // its request id (for BEGIN: the transaction number)
    std::uint64_t generation = 0;  // the connection it went out on
  };

  Impl(std::string path, ClientOptions options)
      : path_(std::move(path)),
        options_(std::move(options)),
        max_in_flight_(std::max<std::size_t>(options_.max_in_flight, 1)) {
    registry().add(this);
  }

  ~Impl() {
    close();
    registry().remove(this);
  }

  PASYN_INTERNAL void connect();

  /// After the connection was lost: a new connection for later calls (SPEC §3), never re-sending
  /// anything of the old one. Attempts are spaced by a backoff that doubles from 25 ms to 2 s
  /// while the daemon stays unreachable; inside it, calls fail at once. REQUIRES: mu_ not held.
  PASYN_INTERNAL void reconnect();

  /// Encodes a request into the outbox and registers its completion; `encode(out, id)` appends
  /// exactly one frame. A request of a transaction passes `tx_generation`, the connection that
  /// began it: it is sent on that connection or not at all (ConnectionLostError), never on a
  /// new one. Other requests reconnect a lost connection first. A `bounded` request waits while
  /// `max_in_flight` requests are unanswered, until `bound`'s deadline (see bound_of).
  template <typename Encode>
  Sent submit(Encode&& encode, detail::Completion completion,
              std::optional<std::uint64_t> tx_generation, bool bounded, const CallBound& bound) {
    std::unique_lock lk(mu_);
    for (;;) {
      if (forked_) leave_parent_connection();
      if (state_ == State::kLost && !tx_generation) {
        lk.unlock();
        reconnect();
        lk.lock();
        continue;  // closed, reconnected, or lost again meanwhile: look again
      }
      check_open();
      if (tx_generation && *tx_generation != generation_) {
        throw ConnectionLostError(
            "the connection that began this transaction was lost; the daemon rolled it back");
      }
      if (!bounded || pending_.size() < max_in_flight_) break;
      wait_for_slot(lk, bound);
    }
    const std::uint64_t id = next_id_++;
    const std::size_t before = outbox_.size();
    try {
      encode(outbox_, id);
    } catch (...) {  // never leave half a frame in the stream
      outbox_.resize(before);
      throw;
    }
    const std::size_t size = outbox_.size() - before;
    if (size > max_frame_) {
      outbox_.resize(before);
      throw DataError("request of " + std::to_string(size) +
                          " bytes exceeds the daemon's maximum frame size of " +
                          std::to_string(max_frame_) + " bytes (--max-frame)",
                      SQLITE_TOOBIG, SQLITE_TOOBIG);
    }
    auto [entry, added] = pending_.emplace(id, std::move(completion));
    const Sent sent{id, generation_};
    if (write_scheduled_) return sent;  // the I/O thread's write in flight picks this up next
    try {
      if (pending_.size() == 1) {
        send_now();  // an idle connection: the lowest latency is to send from here
      } else {
        // Replies are outstanding, so more requests are likely on the way: let the I/O thread
        // gather them into one write (one wake-up of the daemon for many requests).
        schedule_write();
      }
    } catch (...) {  // no write could be scheduled (bad_alloc): the caller is told, and goes
      entry->second.discard();  // (a synchronous caller's waiter with it)
      throw;
    }
    return sent;
  }

  /// The bound of one blocking call, taken when the call begins: its own (pasyn::Timeout) when
  /// it has one, else `request_timeout` (see unbounded()), and the deadline it sets for the
  /// call's waits (for a send slot, then for the reply) together.
  CallBound bound_of(std::optional<std::chrono::milliseconds> own) const {
    const auto timeout = own ? *own : options_.request_timeout;
    if (unbounded(timeout)) return {timeout, std::chrono::steady_clock::time_point::max()};
    return {timeout, std::chrono::steady_clock::now() + timeout};
  }

  /// True when `timeout` sets no bound: zero or less, or a century or more (such as
  /// milliseconds::max(), whose deadline would overflow the clock).
  static bool unbounded(std::chrono::milliseconds timeout) {
    return timeout.count() <= 0 || timeout >= std::chrono::hours(24 * 365 * 100);
  }

  /// Waits for the reply to the synchronous request `id`, registered with `waiter`. If
  /// `bound`'s deadline (see bound_of) passes first, the request is left to discard its reply
  /// (the waiter is about to go) unless that reply is being delivered right now, which is then
  /// taken.
  template <typename T>
  T wait(detail::Waiter<T>& waiter, std::uint64_t id, const CallBound& bound) {
    if (unbounded(bound.timeout)) {
      waiter.wait();
    } else if (!waiter.wait_until(bound.deadline)) {
      if (forget(id)) {
        throw TimeoutError("no reply from pasyn-writerd within " +
                           std::to_string(bound.timeout.count()) +
                           " ms; the request may still be executed");
      }
      waiter.wait();  // out of the table already: its outcome is being delivered
    }
    return waiter.get();
  }

  /// Waits for the reply to BEGIN. If `bound`'s deadline (see bound_of) passes first, the BEGIN
  /// is marked abandoned: should the daemon grant it later, the I/O thread rolls it back at once
  /// (see on_read), so no transaction is ever left without an owner.
  void wait_begin(std::future<void> f, std::atomic<int>& claim, const CallBound& bound) {
    if (!unbounded(bound.timeout) && f.wait_until(bound.deadline) == std::future_status::timeout) {
      int expected = detail::Completion::kWaiting;
      if (claim.compare_exchange_strong(expected, detail::Completion::kAbandoned)) {
        throw TimeoutError("no reply to BEGIN from pasyn-writerd within " +
                           std::to_string(bound.timeout.count()) +
                           " ms; if the daemon grants it later, it is rolled back at once");
      }
      // The reply is being delivered right now: take it.
    }
    f.get();
  }

  PASYN_INTERNAL void close();

  bool connected() const {
    std::lock_guard lk(mu_);
    return state_ == State::kOpen && !forked_;
  }

  const std::string& path() const { return path_; }

  // pthread_atfork handlers (see Registry): every Impl's state is consistent at fork() because
  // the forking thread holds every mu_ across it.
  void lock_for_fork() { mu_.lock(); }
  void unlock_in_parent() { mu_.unlock(); }
  void mark_forked_in_child() {
    // Only the forking thread exists here: a mutex or condition variable another thread held
    // or waited on is made anew; the next use of this client leaves the parent's connection.
    new (&connect_mu_) std::mutex;
    new (&slot_free_) std::condition_variable;
    slot_waiters_ = 0;
    forked_ = true;
    mu_.unlock();
  }

 private:
  enum class State { kOpen, kLost, kClosed };

  /// The event loop, the socket and the thread of one process. Replaced only in a forked child,
  /// where the parent's are abandoned (leaked): destroying them there would deregister the
  /// socket from the epoll instance the parent shares, and joining would wait for a thread that
  /// does not exist in the child.
  struct Io {
    detail::asio::io_context context{1};
    detail::asio::executor_work_guard<detail::asio::io_context::executor_type> work{
        detail::asio::make_work_guard(context)};
    detail::local::socket socket{context};
    std::thread thread;
  };

  /// Every live Impl of the process, for the fork handlers.
  class Registry {
   public:
    Registry() { ::pthread_atfork(&Registry::prepare, &Registry::parent, &Registry::child); }
    void add(Impl* impl) {
      std::lock_guard lk(mu_);
      impls_.insert(impl);
    }
    void remove(Impl* impl) {
      std::lock_guard lk(mu_);
      impls_.erase(impl);
    }

   private:
    static void prepare() {
      auto& r = registry();
      r.mu_.lock();
      for (auto* impl : r.impls_) impl->lock_for_fork();
    }
    static void parent() {
      auto& r = registry();
      for (auto* impl : r.impls_) impl->unlock_in_parent();
      r.mu_.unlock();
    }
    static void child() {
      auto& r = registry();
      for (auto* impl : r.impls_) impl->mark_forked_in_child();
      r.mu_.unlock();
    }
    std::mutex mu_;
    std::unordered_set<Impl*> impls_;  // GUARDED_BY(mu_)
  };

  static Registry& registry() {
    static Registry* r = new Registry;  // never destroyed: Impls may outlive static destruction
    return *r;
  }

  // A new event loop and its thread (signals blocked). REQUIRES: mu_ held.
  // Defined here, not in client_connection.cpp: its lambda's type information is exported
  // (the ABI baseline has it), which it would not be from a function defined out of line.
  void start_io() {
    auto fresh = std::make_unique<Io>();
    Io* io = fresh.get();
    io->thread = detail::start_library_thread([this, io] {
      for (;;) {
        try {
          io->context.run();
          return;
        } catch (...) {  // bad_alloc in a handler: fail what waits, keep serving
          lose("internal error in the client's I/O thread");
        }
      }
    });
    io_ = std::move(fresh);  // only with its thread running
  }

  // In a forked child, on the first use of this client: abandons the parent's connection
  // untouched and marks the connection lost, so that the call reconnects on a connection of
  // this process. REQUIRES: mu_ held, forked_.
  PASYN_INTERNAL void leave_parent_connection();

  // REQUIRES: mu_ held, forked_.
  PASYN_INTERNAL void abandon_parent_io();

  // The synchronous caller of request `id` gives up waiting: its reply, should it come, is
  // discarded. False if the request is no longer in the table (its outcome is being delivered).
  bool forget(std::uint64_t id) {
    std::lock_guard lk(mu_);
    auto it = pending_.find(id);
    if (it == pending_.end()) return false;
    it->second.discard();
    return true;
  }

  // Waits for a slot, until `bound`'s deadline unless unbounded(). REQUIRES: mu_ held through
  // `lk`.
  void wait_for_slot(std::unique_lock<std::mutex>& lk, const CallBound& bound) {
    ++slot_waiters_;
    const auto free = [&] {
      return pending_.size() < max_in_flight_ || state_ != State::kOpen || forked_;
    };
    if (!unbounded(bound.timeout)) {
      const bool got = slot_free_.wait_until(lk, bound.deadline, free);
      --slot_waiters_;
      if (!got) {
        throw TimeoutError("the client's " + std::to_string(max_in_flight_) +
                           " requests in flight (ClientOptions::max_in_flight) were not answered "
                           "within " +
                           std::to_string(bound.timeout.count()) + " ms; the request was not sent");
      }
      return;
    }
    slot_free_.wait(lk, free);
    --slot_waiters_;
  }

  void check_open() const {  // REQUIRES: mu_ held
    if (state_ == State::kClosed) throw ConnectionClosedError("the client is closed");
    if (state_ == State::kLost) {
      throw ConnectionLostError("the connection to pasyn-writerd at " + path_ +
                                " was lost: " + lost_reason_);
    }
  }

  // A reconnect (the first connection is set up by connect() itself): hands a connected
  // descriptor to the I/O thread and waits until it reads from it. Never waits on an event
  // loop that may have stopped: the handler is posted under mu_ only while the client is not
  // closed, and close() posts its own under mu_ before stopping the loop.
  PASYN_INTERNAL void install(int fd, std::uint32_t max_frame);

  // The socket assigned `fd` becomes the connection; returns its generation (see the
  // definition). REQUIRES: mu_ held.
  PASYN_INTERNAL std::uint64_t adopt(int fd, std::uint32_t max_frame);

  // Sends the outbox from the calling thread (no hand-off to the I/O thread, which costs a
  // wake-up per request when idle). Whatever the socket does not take at once is left to the
  // I/O thread. The send happens under mu_, so lose() and close() cannot close the descriptor
  // underneath it. REQUIRES: mu_ held, no write scheduled.
  PASYN_INTERNAL void send_now();

  // Has the I/O thread write the outbox. Leaves nothing scheduled if it throws.
  // REQUIRES: mu_ held, no write scheduled.
  PASYN_INTERNAL void schedule_write();

  PASYN_INTERNAL void do_write();

  std::uint64_t generation() const {
    std::lock_guard lk(mu_);
    return generation_;
  }

  PASYN_INTERNAL void do_read(std::uint64_t gen);

  PASYN_INTERNAL void on_read(detail::error_code ec, std::size_t n, std::uint64_t gen);

  // I/O thread: the daemon granted a BEGIN whose caller gave up waiting (wait_begin). Nobody
  // owns that transaction: roll it back now, so that it holds up no writer.
  PASYN_INTERNAL void roll_back_abandoned(std::uint64_t transaction, std::uint64_t gen);

  // I/O thread: the connection is gone; fail everything waiting, promptly.
  PASYN_INTERNAL void lose(const std::string& why);

  PASYN_INTERNAL void fail_all(std::exception_ptr error);

  const std::string path_;
  const ClientOptions options_;
  const std::size_t max_in_flight_;
  std::unique_ptr<Io> io_;             // GUARDED_BY(mu_) for replacement; see Io
  int fd_ = -1;                        // GUARDED_BY(mu_): the socket's descriptor, for send_now()
  proto::FrameDecoder decoder_;        // I/O thread only (set up by adopt() before its reads)
  std::size_t offered_ = 0;            // I/O thread: bytes the read in flight may fill
  bool busy_reads_ = false;            // I/O thread: the last read filled what it was offered
  std::vector<std::uint8_t> writing_;  // I/O thread only: the write in flight

  mutable std::mutex mu_;
  State state_ = State::kOpen;                         // GUARDED_BY(mu_)
  bool forked_ = false;                                // GUARDED_BY(mu_): see mark_forked_in_child
  std::string lost_reason_;                            // GUARDED_BY(mu_)
  std::uint64_t next_id_ = 1;                          // GUARDED_BY(mu_)
  std::uint32_t max_frame_ = proto::kDefaultMaxFrame;  // GUARDED_BY(mu_)
  std::uint64_t generation_ = 0;  // GUARDED_BY(mu_); written on the I/O thread (or by connect())
  std::chrono::milliseconds backoff_{25};               // GUARDED_BY(mu_)
  std::chrono::steady_clock::time_point next_attempt_;  // GUARDED_BY(mu_)
  std::mutex connect_mu_;                               // one reconnect at a time
  std::vector<std::uint8_t> outbox_;                    // GUARDED_BY(mu_)
  bool write_scheduled_ = false;                        // GUARDED_BY(mu_)
  // The pending requests. Their nodes come from a pool that keeps what was freed, so that a
  // request in the steady state allocates nothing (the pool is not thread-safe: mu_ guards it).
  using Pending = std::pmr::unordered_map<std::uint64_t, detail::Completion>;
  std::pmr::unsynchronized_pool_resource pending_pool_;  // GUARDED_BY(mu_)
  Pending pending_{&pending_pool_};                      // GUARDED_BY(mu_)
  std::condition_variable slot_free_;  // pending_ dropped below max_in_flight_, or not kOpen
  std::size_t slot_waiters_ = 0;       // GUARDED_BY(mu_)
};

}  // namespace pasyn
