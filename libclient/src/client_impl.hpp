// MultiplexedClient::Impl: the connection, its I/O thread and the pending requests. Declared
// here with the calls' entry points (submit, wait); the connection's life is defined in
// client_connection.cpp, the sending, reading and delivering in client_io.cpp.
// Over 600 lines: a third of it is the design below, and the class is the one every client
// source file shares (its definitions are in the three files named above).
//
// Design
// ------
// * Calling threads encode their request straight into the shared outbox under mu_ and register
//   a completion under the request id. A synchronous caller, and any caller on an idle
//   connection, sends the outbox itself (send_now). An asynchronous call while replies are
//   outstanding, and whatever the socket did not take, is left to the I/O thread
//   (write_scheduled_): it sends whatever has gathered, and clears `write_scheduled_` only under
//   mu_ and only when the outbox is empty, so a request appended meanwhile is always sent (no
//   lost wake-up), and a pipelining thread's requests are coalesced into few syscalls. A
//   synchronous caller does not hand its request over: it waits for the reply anyway, and the
//   hand-off cost a wake-up of the I/O thread per request (16 writers in 4 processes sharing a
//   client per process, synchronous=normal: ~99k rows/s handing over, ~140k sending).
// * Reader role (leader/follower): at most one thread reads the socket at a time, and while any
//   request is pending exactly one holds the role (reader_), so every reply is read. The reader
//   owns the connection's frame decoder (Conn). A synchronous caller (one waiting on a
//   detail::Waiter) that finds no reader takes the role in submit() and, after sending, reads
//   the socket itself until its own reply has come, delivering every other frame it reads to
//   its owner exactly as the I/O thread does (a Waiter woken, a promise set, an abandoned BEGIN
//   rolled back, a request-id-0 error or an unknown id losing the connection). Then it lets go:
//   with requests still pending it hands the role to the first caller waiting in followers_
//   (kLead on its Baton) or, when only asynchronous completions are left, to the I/O thread;
//   else nobody reads. A synchronous caller that finds a reader enlists in followers_ and waits
//   on its Waiter: for its reply, or for the role. An asynchronous call (and BEGIN, which waits
//   on a future) that finds no reader gives the role to the I/O thread, which keeps it until
//   nothing is pending, and then goes on watching the idle connection (io_watch_) until a
//   synchronous caller takes the role: the next asynchronous call finds it polling and wakes
//   nobody (one wake-up per reply, not two; measured with 1,000 clients each keeping one
//   execute_async in flight, it cost ~20% of the rows/s). A lone synchronous caller thus
//   sends, reads and returns on its own thread: no wake-up of the I/O thread and no futex wake
//   per call. When its request has been the only one pending for a few calls, it polls the
//   socket for up to 25 us before it sleeps, while polling has cost nobody a CPU (ReplyPoll,
//   reply_poll.hpp: it saves the wake-up of an idle CPU, ~25 us a call on a VM).
// * Why not Boost.Asio for the socket (the developers' guide says not to hand-write what Asio
//   does; this is the documented exception): Boost 1.74's epoll reactor registers a descriptor
//   with EPOLLIN|EPOLLERR|EPOLLHUP|EPOLLPRI|EPOLLET for the descriptor's whole life
//   (epoll_reactor::register_descriptor), so while Asio owns the socket every reply wakes the
//   I/O thread's epoll_wait even when another thread reads the data. The data socket must not
//   be registered with an event loop while a caller holds the reader role, so the I/O thread
//   runs a poll() loop of its own over an eventfd (its wake-ups: a write to do, the role handed
//   to it, close) and the socket, which it polls only for what it has to do: POLLIN while it
//   holds the role, POLLOUT while a write waits for room.
// * Idle connection: nobody watches it, but the daemon sends nothing unsolicited except a
//   request-id-0 error before it closes. So whoever finds the connection idle and asks about it
//   (submit() before sending on it, connected()) first peeks at it (recv MSG_PEEK|MSG_DONTWAIT)
//   and, if anything came, reads it as the reader: a loss is noticed then, and the call
//   reconnects as it would have had the I/O thread noticed it at once.
// * Descriptors: a Conn (socket, decoder) is shared (shared_ptr) by whoever may be in a syscall
//   on it, and its descriptor is closed with its last reference. lose() and close() never close
//   a descriptor another thread may be reading: they shutdown(SHUT_RDWR) it, which wakes a
//   reader in poll(), and drop the Impl's reference; the reader lets go of the role and of the
//   Conn when it sees that (every completion has been failed meanwhile).
// * Completions only fulfil promises or wake waiters; no user code runs on a reading thread. A
//   synchronous call waits on a Waiter on its own stack, which the pending entry points at; the
//   pending table reuses the nodes of delivered requests (spare_nodes_), and the outbox keeps
//   its capacity, so a synchronous call allocates nothing in the steady state. An asynchronous
//   call's completion holds its promise by value (it costs the promise's shared state).
// * A synchronous caller that gives up (its Timeout, or request_timeout) hands the reader role
//   on if it holds it, leaves the list of followers, and turns its pending entry into one that
//   discards the reply, unless the entry was already taken for delivery; then it waits for that
//   delivery, which is imminent, so that nothing ever points at a waiter that is gone.
// * At most ClientOptions::max_in_flight requests are pending; submit() waits for a slot.
//   A transaction's requests go out on the connection that began it or not at all. One bound
//   per call (bound_of: its own Timeout, else request_timeout) limits the slot wait and the
//   reply wait together: both wait until the same deadline.
// * fork(): pthread_atfork handlers (Registry) hold every client's lock across fork() and mark
//   it forked in the child, whose first call abandons the parent's socket and thread untouched
//   (Io, Conn: leaked, never closed or shut down) and reconnects.
// * When the connection fails, every pending completion fails with ConnectionLostError at once.
//   The next call reconnects (with a backoff while the daemon stays away); the requests of the
//   old connection are never re-sent, and a thread still reading the old socket recognises it
//   by its generation and lets go.
#pragma once

#include <poll.h>
#include <pthread.h>
#include <sqlite3.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <condition_variable>
#include <cstring>
#include <mutex>
#include <optional>
#include <pasyn/client.hpp>
#include <pasyn/proto/codec.hpp>
#include <pasyn/proto/unix_socket.hpp>
#include <thread>
#include <unordered_map>
#include <unordered_set>

#include "deadline.hpp"
#include "handshake.hpp"
#include "interrupt.hpp"
#include "outbox.hpp"
#include "process.hpp"
#include "reply.hpp"
#include "reply_poll.hpp"
#include "waiter.hpp"

// An out-of-line member of MultiplexedClient::Impl: not exported. Impl is nested in an exported
// class, so its members would otherwise join the library's ABI (scripts/abi-check.sh).
#define PASYN_INTERNAL __attribute__((visibility("hidden")))

namespace pasyn {
namespace detail {

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
    bool lead = false;             // a synchronous caller: it holds the reader role (wait())
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
  /// while the daemon stays unreachable; inside it, calls fail at once. Bounded by
  /// `connect_timeout` and by the deadline of the call that needs it (`bound`), also while
  /// another thread's attempt runs (TimeoutError: the call's request was not sent).
  /// REQUIRES: mu_ not held.
  PASYN_INTERNAL void reconnect(const CallBound& bound);
  /// After a failed reconnect: the next attempt waits (backoff_ doubles). REQUIRES: mu_ not held.
  PASYN_INTERNAL void back_off();

  /// Encodes a request into the outbox and registers its completion; `encode(out, id)` appends
  /// exactly one frame. A request of a transaction passes `tx_generation`, the connection that
  /// began it: it is sent on that connection or not at all (ConnectionLostError), never on a
  /// new one. Other requests reconnect a lost connection first. A `bounded` request waits while
  /// `max_in_flight` requests are unanswered, until `bound`'s deadline (see bound_of). Gives
  /// the reader role to a synchronous caller (a completion with a Waiter: Sent::lead) or to the
  /// I/O thread if nobody holds it; a synchronous caller that finds a reader enlists as a
  /// follower.
  template <typename Encode>
  Sent submit(Encode&& encode, detail::Completion completion,
              std::optional<std::uint64_t> tx_generation, bool bounded, const CallBound& bound) {
    std::unique_lock lk(mu_);
    for (;;) {
      if (forked_) leave_parent_connection();
      if (state_ == State::kLost && !tx_generation) {
        lk.unlock();
        reconnect(bound);
        lk.lock();
        continue;  // closed, reconnected, or lost again meanwhile: look again
      }
      check_open();
      if (tx_generation && *tx_generation != generation_) {
        throw ConnectionLostError(
            "the connection that began this transaction was lost; the daemon rolled it back");
      }
      if (!reader_ && peek_idle(lk)) continue;  // something came while idle: look again
      if (!bounded || pending_.size() < max_in_flight_) break;
      wait_for_slot(lk, bound);
    }
    const std::uint64_t id = next_id_++;
    std::vector<std::uint8_t>& out = outbox_.for_append();
    const std::size_t before = out.size();
    try {
      encode(out, id);
    } catch (...) {  // never leave half a frame in the stream
      out.resize(before);
      throw;
    }
    const std::size_t size = out.size() - before;
    if (size > max_frame_) {
      out.resize(before);
      throw DataError("request of " + std::to_string(size) +
                          " bytes exceeds the daemon's maximum frame size of " +
                          std::to_string(max_frame_) + " bytes (--max-frame)",
                      SQLITE_TOOBIG, SQLITE_TOOBIG);
    }
    detail::WaitNode* const waiter = completion.waiter();
    try {
      add_pending(id, std::move(completion));
    } catch (...) {  // not registered: never sent either
      out.resize(before);
      throw;
    }
    Sent sent{id, generation_};
    if (waiter && !reader_) {
      reader_ = waiter;
      io_watch_ = false;  // a synchronous caller reads: the I/O thread need not watch
      sent.lead = true;
    } else if (waiter) {
      enlist(*waiter);
    } else if (!reader_) {
      give_role_to_io();
    }
    if (write_scheduled_) return sent;  // the I/O thread sends this with what is gathering
    if (pending_.size() == 1 || waiter) {
      // An idle connection, or a caller that will wait for its reply: the lowest latency is to
      // send from here (see the design above).
      send_now();
    } else {
      // An asynchronous call with replies outstanding: more requests are likely on the way, so
      // let the I/O thread gather them into one write (one wake-up of the daemon for many).
      schedule_write();
    }
    return sent;
  }

  const ClientOptions& options() const noexcept { return options_; }
  // For the calls that open a connection of their own (subscribe()): a closed client opens none.
  void check_not_closed() const {
    std::lock_guard lk(mu_);
    if (state_ == State::kClosed) throw ConnectionClosedError("the client is closed");
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
    return timeout.count() <= 0 || detail::beyond_any_deadline(timeout);
  }

  /// Waits for the reply to the synchronous request `sent`, registered with `waiter`: reads
  /// the socket while it holds the reader role (see lead()), else waits to be woken with the
  /// reply or the role. If `bound`'s deadline (see bound_of) passes first, the role is handed
  /// on and the request is left to discard its reply (the waiter is about to go) unless that
  /// reply is being delivered right now, which is then taken.
  /// The calling thread's InterruptScope, if any, cuts the wait into slices and is asked at the
  /// end of each whether to give up (as at the deadline, but InterruptedError).
  template <typename T>
  T wait(detail::Waiter<T>& waiter, const Sent& sent, const CallBound& bound) {
    const auto* deadline = unbounded(bound.timeout) ? nullptr : &bound.deadline;
    const InterruptScope* scope = InterruptAccess::current();
    std::chrono::steady_clock::time_point slice;
    bool sliced = false, interrupted = false;
    bool reading = sent.lead;
    for (;;) {
      const auto* until = detail::next_wake(deadline, scope, slice, sliced);
      bool woke_at_until = false;
      if (reading) {
        const Turn turn = lead(waiter, until);
        if (turn == Turn::kDone) return waiter.get();
        if (turn == Turn::kLetGo) {
          reading = false;  // the connection is gone, and so is the role
          continue;
        }
        woke_at_until = true;  // kDeadline: still the reader (give_up() hands the role on)
      } else {
        const std::uint32_t event = waiter.wait_event(until);
        if (event & detail::Baton::kDone) return waiter.get();
        if (event) {
          waiter.baton.clear_lead();
          reading = true;
          continue;
        }
        woke_at_until = true;
      }
      if (woke_at_until && !sliced) break;  // the deadline
      step_aside(waiter);
      if (InterruptAccess::fire(*scope)) {
        interrupted = true;
        break;
      }
      reading = step_back(waiter, sent.id);
    }
    if (give_up(waiter, sent.id)) {
      if (interrupted) {
        throw InterruptedError(
            "the wait for pasyn-writerd's reply was interrupted; the request may still be "
            "executed");
      }
      throw TimeoutError("no reply from pasyn-writerd within " +
                         std::to_string(bound.timeout.count()) +
                         " ms; the request may still be executed");
    }
    while (!(waiter.wait_event(nullptr) & detail::Baton::kDone)) {
    }  // out of the table already: its outcome is being delivered
    return waiter.get();
  }

  /// Waits for the reply to BEGIN. If `bound`'s deadline (see bound_of) passes first, the BEGIN
  /// is marked abandoned: should the daemon grant it later, the thread that reads the grant
  /// rolls it back at once (see deliver), so no transaction is ever left without an owner.
  /// The calling thread's InterruptScope, if any, is asked as in wait().
  void wait_begin(std::future<void> f, std::atomic<int>& claim, const CallBound& bound) {
    const auto* deadline = unbounded(bound.timeout) ? nullptr : &bound.deadline;
    const InterruptScope* scope = InterruptAccess::current();
    std::chrono::steady_clock::time_point slice;
    bool sliced = false, interrupted = false, gave_up = false;
    for (;;) {
      const auto* until = detail::next_wake(deadline, scope, slice, sliced);
      if (until == nullptr) break;  // no bound, no scope: f.get() waits
      if (f.wait_until(*until) == std::future_status::ready) break;
      if (!sliced || InterruptAccess::fire(*scope)) {
        interrupted = sliced;
        gave_up = true;
        break;
      }
    }
    if (gave_up) {
      int expected = detail::Completion::kWaiting;
      if (claim.compare_exchange_strong(expected, detail::Completion::kAbandoned)) {
        if (interrupted) {
          throw InterruptedError(
              "the wait for pasyn-writerd's reply to BEGIN was interrupted; if the daemon grants "
              "it later, it is rolled back at once");
        }
        throw TimeoutError("no reply to BEGIN from pasyn-writerd within " +
                           std::to_string(bound.timeout.count()) +
                           " ms; if the daemon grants it later, it is rolled back at once");
      }
      // The reply is being delivered right now: take it.
    }
    f.get();
  }

  PASYN_INTERNAL void close();

  /// Whether the connection is open. An idle one is looked at first (see peek_idle), so that a
  /// daemon that has closed it is noticed although nobody reads it.
  bool connected() noexcept {
    std::unique_lock lk(mu_);
    if (state_ == State::kOpen && !forked_ && !reader_) {
      try {
        peek_idle(lk);
      } catch (...) {  // bad_alloc: what is known so far
      }
    }
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
    new (&reconnected_) std::condition_variable;
    reconnecting_ = false;
    new (&slot_free_) std::condition_variable;
    slot_waiters_ = 0;
    forked_ = true;
    mu_.unlock();
  }

 private:
  enum class State { kOpen, kLost, kClosed };

  /// How a reading caller's turn ended (lead()): its reply came; its deadline passed (it still
  /// holds the role); or the connection was lost or closed, which took the role away.
  enum class Turn { kDone, kDeadline, kLetGo };

  /// One connection: its socket and the reader's frame decoder. Shared by whoever may be in a
  /// syscall on the socket; the descriptor is closed with the last reference.
  struct Conn {
    Conn(int socket, std::uint32_t max_frame, std::uint64_t generation)
        : fd(socket), gen(generation), decoder(std::max(max_frame, proto::kDefaultMaxFrame)) {}
    ~Conn() { ::close(fd); }
    Conn(const Conn&) = delete;
    Conn& operator=(const Conn&) = delete;
    const int fd;
    const std::uint64_t gen;      // the generation it is
    proto::FrameDecoder decoder;  // the reader's only (the role passes under mu_)
    bool busy_reads = false;      // the reader's only: the last read filled what it was offered
  };

  /// The I/O thread of one process and the eventfd that wakes it. Replaced only in a forked
  /// child, where the parent's is abandoned (leaked): joining would wait for a thread that does
  /// not exist in the child.
  struct Io {
    Io() : wake(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK)) {
      if (wake < 0) throw Error("cannot create an eventfd for the client's I/O thread");
    }
    ~Io() { ::close(wake); }
    Io(const Io&) = delete;
    Io& operator=(const Io&) = delete;
    const int wake;
    bool stop = false;  // GUARDED_BY(mu_): close() tells the thread to return
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

  // A new I/O thread (signals blocked, named for `top -H`). REQUIRES: mu_ held.
  // Defined here, not in client_connection.cpp: its lambda's type information is exported
  // (the ABI baseline has it), which it would not be from a function defined out of line.
  void start_io() {
    auto fresh = std::make_unique<Io>();
    Io* io = fresh.get();
    io->thread = detail::start_library_thread([this, io] {
      ::pthread_setname_np(::pthread_self(), "pasyn-client-io");
      for (;;) {
        try {
          run_io(*io);
          return;
        } catch (...) {  // bad_alloc while reading: fail what waits, keep serving
          lose("internal error in the client's I/O thread", generation());
        }
      }
    });
    io_ = std::move(fresh);  // only with its thread running
  }

  // The I/O thread's loop: writes what is scheduled, reads while it holds the reader role,
  // until close() stops it.
  PASYN_INTERNAL void run_io(Io& io);

  // The I/O thread reads from now on; it is woken for it unless it already polls the connection
  // (watching it idle, see run_io), which is what saves an asynchronous call on an idle
  // connection a wake-up. REQUIRES: mu_ held, no reader.
  void give_role_to_io() noexcept {
    reader_ = &io_lead_;
    if (!conn_ || io_polls_gen_ != conn_->gen) wake_io();
  }

  // Wakes the I/O thread to look at what it has to do. REQUIRES: mu_ held.
  void wake_io() noexcept {
    if (!io_) return;
    const std::uint64_t one = 1;
    [[maybe_unused]] const auto n = ::write(io_->wake, &one, sizeof one);
  }

  // A reading caller's turn (see Turn): reads and delivers until `self`'s reply has come
  // (then lets go of the role), or until `deadline`. REQUIRES: mu_ not held.
  PASYN_INTERNAL Turn lead(detail::WaitNode& self,
                           const std::chrono::steady_clock::time_point* deadline);

  // The caller of `self` gives up at its deadline: hands the role on if it holds it, leaves
  // the followers and, if its request `id` is still in the table, makes it discard its reply
  // (true). False if the request is no longer in the table (its outcome is being delivered).
  PASYN_INTERNAL bool give_up(detail::WaitNode& self, std::uint64_t id);

  // The reader lets go of the role: to the first follower, or to the I/O thread when only
  // asynchronous completions are pending, or to nobody. REQUIRES: mu_ held.
  PASYN_INTERNAL void hand_on();

  // Around an InterruptScope's check (wait()): the caller of `self` steps out of the reader
  // role and the followers while the check runs, since the check may make calls of its own on
  // this client (client.hpp allows it), and they must be served by whoever reads meanwhile,
  // not wait for this caller. step_back() puts it back among the followers if its
  // request `id` still waits for its reply (else the reply is being delivered: kDone comes),
  // or makes it the reader if nobody reads (true). REQUIRES: mu_ not held.
  PASYN_INTERNAL void step_aside(detail::WaitNode& self);
  PASYN_INTERNAL bool step_back(detail::WaitNode& self, std::uint64_t id);

  // On a connection nobody reads and nothing is pending: if anything came (the daemon's
  // request-id-0 error, end of stream), reads it as the reader and returns true (the state may
  // have changed); else false. REQUIRES: mu_ held through `lk`, state_ kOpen, no reader.
  PASYN_INTERNAL bool peek_idle(std::unique_lock<std::mutex>& lk);

  // One read from `c` and the delivery of every complete frame in the decoder. False when the
  // connection is no longer the current one or was lost (lose() done). REQUIRES: the reader.
  PASYN_INTERNAL bool read_some(Conn& c);

  // Hands one reply of generation `gen` to its completion. False when the connection is gone.
  PASYN_INTERNAL bool deliver(const proto::FrameView& frame, std::uint64_t gen);

  // The follower list (FIFO). REQUIRES: mu_ held.
  void enlist(detail::WaitNode& node) noexcept {
    node.prev = followers_tail_;
    node.next = nullptr;
    (followers_tail_ ? followers_tail_->next : followers_head_) = &node;
    followers_tail_ = &node;
    node.linked = true;
  }
  void unlist(detail::WaitNode& node) noexcept {
    if (!node.linked) return;
    (node.prev ? node.prev->next : followers_head_) = node.next;
    (node.next ? node.next->prev : followers_tail_) = node.prev;
    node.prev = node.next = nullptr;
    node.linked = false;
  }

  // Shuts the connection's socket down (waking whoever reads or polls it), drops the Impl's
  // reference to it, and clears the reader role. REQUIRES: mu_ held.
  void retire_conn() noexcept {
    reader_ = nullptr;
    if (conn_) ::shutdown(conn_->fd, SHUT_RDWR);
    conn_.reset();
  }

  // In a forked child, on the first use of this client: abandons the parent's connection
  // untouched and marks the connection lost, so that the call reconnects on a connection of
  // this process. REQUIRES: mu_ held, forked_.
  PASYN_INTERNAL void leave_parent_connection();

  // REQUIRES: mu_ held, forked_.
  PASYN_INTERNAL void abandon_parent_io();

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

  // The pending requests by id (see pending_).
  using Pending = std::unordered_map<std::uint64_t, detail::Completion>;

  // Registers `completion` under `id`, in a spare node if there is one. Throws bad_alloc (then
  // nothing is registered). REQUIRES: mu_ held.
  void add_pending(std::uint64_t id, detail::Completion completion) {
    if (spare_nodes_.empty()) {
      pending_.emplace(id, std::move(completion));
      return;
    }
    Pending::node_type node = std::move(spare_nodes_.back());
    spare_nodes_.pop_back();
    node.key() = id;
    node.mapped() = std::move(completion);
    pending_.insert(std::move(node));  // on bad_alloc (a rehash), the node goes with `node`
  }

  // Takes the pending request `it` out of the table; its node is kept for the next request.
  // REQUIRES: mu_ held.
  detail::Completion take_pending(Pending::iterator it) noexcept {
    Pending::node_type node = pending_.extract(it);
    detail::Completion done = std::move(node.mapped());
    try {
      spare_nodes_.push_back(std::move(node));
    } catch (const std::bad_alloc&) {  // not kept: freed with `node` (push_back left it intact)
    }
    return done;
  }

  void check_open() const {  // REQUIRES: mu_ held
    if (state_ == State::kClosed) throw ConnectionClosedError("the client is closed");
    if (state_ == State::kLost) {
      throw ConnectionLostError("the connection to pasyn-writerd at " + path_ +
                                " was lost: " + lost_reason_);
    }
  }

  // A reconnect (the first connection is set up by connect() itself): the connected
  // descriptor becomes the connection, unless the client was closed meanwhile.
  PASYN_INTERNAL void install(int fd, std::uint32_t max_frame);

  // The connected socket `fd` becomes the connection (see the definition). REQUIRES: mu_ held.
  PASYN_INTERNAL void adopt(int fd, std::uint32_t max_frame);

  // Sends the outbox from the calling thread (no hand-off to the I/O thread, which costs a
  // wake-up per request when idle). Whatever the socket does not take at once is left to the
  // I/O thread. REQUIRES: mu_ held, state_ kOpen, no write scheduled.
  PASYN_INTERNAL void send_now();

  // Has the I/O thread write the outbox. REQUIRES: mu_ held, no write scheduled.
  void schedule_write() noexcept {
    write_scheduled_ = true;
    wake_io();
  }

  // The I/O thread sends what the socket takes of the outbox; clears write_scheduled_ once it
  // is empty. Returns 0, or the errno of a failed send. REQUIRES: mu_ held, conn_.
  PASYN_INTERNAL int flush_outbox();

  std::uint64_t generation() const {
    std::lock_guard lk(mu_);
    return generation_;
  }

  // The daemon granted a BEGIN whose caller gave up waiting (wait_begin). Nobody owns that
  // transaction: roll it back now, so that it holds up no writer. Called by the reader.
  PASYN_INTERNAL void roll_back_abandoned(std::uint64_t transaction, std::uint64_t gen);

  // Connection `gen` is gone (ignored if it is not the current one, or was lost or closed
  // already): fail everything waiting, promptly.
  PASYN_INTERNAL void lose(const std::string& why, std::uint64_t gen);

  // Fails every pending completion, each with an exception of its own, make(what): callers on
  // several threads never share one exception object (whose last reference any of them could
  // drop while another still reads it).
  PASYN_INTERNAL void fail_all(std::exception_ptr (*make)(const std::string&),
                               const std::string& what);
  // fail_all's two halves: takes every pending completion (and the followers' list) out.
  // REQUIRES: mu_ held.
  PASYN_INTERNAL Pending take_all_pending() noexcept;
  // Fails what take_all_pending() took. REQUIRES: mu_ not held.
  PASYN_INTERNAL static void fail_taken(Pending& taken,
                                        std::exception_ptr (*make)(const std::string&),
                                        const std::string& what);

  const std::string path_;
  const ClientOptions options_;
  const std::size_t max_in_flight_;
  std::unique_ptr<Io> io_;      // GUARDED_BY(mu_) for replacement; see Io
  std::shared_ptr<Conn> conn_;  // GUARDED_BY(mu_): the connection while kOpen, else null
  // The reader role (GUARDED_BY(mu_)): the WaitNode of the synchronous caller reading,
  // &io_lead_ for the I/O thread, nullptr for nobody. Followers wait in the FIFO list.
  detail::WaitNode* reader_ = nullptr;
  detail::WaitNode io_lead_;  // stands for the I/O thread in reader_
  // GUARDED_BY(mu_): the I/O thread watches the idle connection (POLLIN with no reader) after
  // it last held the role, until a synchronous caller takes it (see run_io).
  bool io_watch_ = false;
  // GUARDED_BY(mu_): the generation of the Conn the I/O thread polls for POLLIN right now, or 0.
  std::uint64_t io_polls_gen_ = 0;
  detail::ReplyPoll reply_poll_;                // GUARDED_BY(mu_): see lead()
  detail::WaitNode* followers_head_ = nullptr;  // GUARDED_BY(mu_)
  detail::WaitNode* followers_tail_ = nullptr;  // GUARDED_BY(mu_)

  mutable std::mutex mu_;
  State state_ = State::kOpen;                          // GUARDED_BY(mu_)
  bool forked_ = false;                                 // GUARDED_BY(mu_): see mark_forked_in_child
  std::string lost_reason_;                             // GUARDED_BY(mu_)
  std::uint64_t next_id_ = 1;                           // GUARDED_BY(mu_)
  std::uint32_t max_frame_ = proto::kDefaultMaxFrame;   // GUARDED_BY(mu_)
  std::uint64_t generation_ = 0;                        // GUARDED_BY(mu_)
  std::chrono::milliseconds backoff_{25};               // GUARDED_BY(mu_)
  std::chrono::steady_clock::time_point next_attempt_;  // GUARDED_BY(mu_)
  bool reconnecting_ = false;                           // GUARDED_BY(mu_): see reconnect()
  std::condition_variable reconnected_;                 // reconnecting_ became false
  detail::Outbox outbox_;                               // GUARDED_BY(mu_)
  bool write_scheduled_ = false;                        // GUARDED_BY(mu_)
  // The pending requests. A delivered request's node is kept (spare_nodes_) and reused by the
  // next, so that a request in the steady state allocates nothing. (Not a
  // std::pmr::unsynchronized_pool_resource: libstdc++ 12's dereferences a null pointer when its
  // upstream allocation fails, instead of throwing bad_alloc; SyncAllocTest found it.)
  Pending pending_;                              // GUARDED_BY(mu_)
  std::vector<Pending::node_type> spare_nodes_;  // GUARDED_BY(mu_)
  std::condition_variable slot_free_;  // pending_ dropped below max_in_flight_, or not kOpen
  std::size_t slot_waiters_ = 0;       // GUARDED_BY(mu_)
};

}  // namespace pasyn
