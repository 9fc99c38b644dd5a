// MultiplexedClient::Impl: the connection, its I/O thread and the pending requests.
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
//   the lock. Completions only fulfil promises; no user code runs on the I/O thread.
//   A completion holds its promise by value (with libstdc++ a request costs the promise's
//   shared state, its result and a node in the pending table).
// * At most ClientOptions::max_in_flight requests are pending; submit() waits for a slot.
//   A transaction's requests go out on the connection that began it or not at all.
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

  void connect() {
    const auto deadline = std::chrono::steady_clock::now() + options_.connect_timeout;
    const int fd = detail::connect_to_daemon(path_, options_, deadline);
    std::uint32_t max_frame = 0;
    try {
      max_frame = detail::handshake(fd, path_, options_, deadline);
      std::lock_guard lk(mu_);
      start_io();
    } catch (...) {
      ::close(fd);
      throw;
    }
    install(fd, max_frame);
  }

  /// After the connection was lost: a new connection for later calls (SPEC §3), never re-sending
  /// anything of the old one. Attempts are spaced by a backoff that doubles from 25 ms to 2 s
  /// while the daemon stays unreachable; inside it, calls fail at once. REQUIRES: mu_ not held.
  void reconnect() {
    std::lock_guard one_at_a_time(connect_mu_);
    {
      std::lock_guard lk(mu_);
      if (state_ != State::kLost) return;  // closed (check_open says so) or already reconnected
      if (std::chrono::steady_clock::now() < next_attempt_) {
        throw ConnectionLostError("the connection to pasyn-writerd at " + path_ + " was lost (" +
                                  lost_reason_ + "); reconnecting is backing off");
      }
    }
    const auto deadline = std::chrono::steady_clock::now() + options_.connect_timeout;
    int fd = -1;
    std::uint32_t max_frame = 0;
    try {
      fd = detail::connect_to_daemon(path_, options_, deadline);
      max_frame = detail::handshake(fd, path_, options_, deadline);
    } catch (...) {
      if (fd >= 0) ::close(fd);
      std::lock_guard lk(mu_);
      next_attempt_ = std::chrono::steady_clock::now() + backoff_;
      backoff_ = std::min(backoff_ * 2, std::chrono::milliseconds(2000));
      throw;
    }
    install(fd, max_frame);
  }

  /// Encodes a request into the outbox and registers its completion; `encode(out, id)` appends
  /// exactly one frame. A request of a transaction passes `tx_generation`, the connection that
  /// began it: it is sent on that connection or not at all (ConnectionLostError), never on a
  /// new one. Other requests reconnect a lost connection first. A `bounded` request waits while
  /// `max_in_flight` requests are unanswered.
  template <typename Encode>
  Sent submit(Encode&& encode, detail::Completion completion,
              std::optional<std::uint64_t> tx_generation, bool bounded) {
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
      wait_for_slot(lk);
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
    pending_.emplace(id, std::move(completion));
    const Sent sent{id, generation_};
    if (write_scheduled_) return sent;  // the I/O thread's write in flight picks this up next
    if (pending_.size() == 1) {
      send_now(lk);  // an idle connection: the lowest latency is to send from here
    } else {
      // Replies are outstanding, so more requests are likely on the way: let the I/O thread
      // gather them into one write (one wake-up of the daemon for many requests).
      write_scheduled_ = true;
      detail::asio::post(io_->context, [self = shared_from_this()] { self->do_write(); });
    }
    return sent;
  }

  template <typename T>
  T wait(std::future<T> f) {
    if (options_.request_timeout.count() > 0 &&
        f.wait_for(options_.request_timeout) == std::future_status::timeout) {
      throw TimeoutError("no reply from pasyn-writerd within " +
                         std::to_string(options_.request_timeout.count()) +
                         " ms; the request may still be executed");
    }
    return f.get();
  }

  /// Waits for the reply to BEGIN. If `request_timeout` runs out first, the BEGIN is marked
  /// abandoned: should the daemon grant it later, the I/O thread rolls it back at once (see
  /// on_read), so no transaction is ever left without an owner.
  void wait_begin(std::future<void> f, std::atomic<int>& claim) {
    if (options_.request_timeout.count() > 0 &&
        f.wait_for(options_.request_timeout) == std::future_status::timeout) {
      int expected = detail::Completion::kWaiting;
      if (claim.compare_exchange_strong(expected, detail::Completion::kAbandoned)) {
        throw TimeoutError("no reply to BEGIN from pasyn-writerd within " +
                           std::to_string(options_.request_timeout.count()) +
                           " ms; if the daemon grants it later, it is rolled back at once");
      }
      // The reply is being delivered right now: take it.
    }
    f.get();
  }

  void close() {
    std::unique_lock lk(mu_);
    if (state_ == State::kClosed) return;
    state_ = State::kClosed;
    slot_free_.notify_all();
    if (forked_) {  // the parent's socket, event loop and thread: leave them all alone
      abandon_parent_io();
      return;
    }
    if (!io_) return;  // the first connection failed before the I/O thread started
    // Posted under mu_: a reconnect's install() either posted before (its handler runs before
    // run() returns and sees kClosed) or sees kClosed and never posts.
    detail::asio::post(io_->context, [this] {
      std::lock_guard lk(mu_);  // no send_now() in progress on this descriptor
      detail::error_code ignored;
      io_->socket.shutdown(detail::local::socket::shutdown_both, ignored);
      io_->socket.close(ignored);
      fd_ = -1;
    });
    io_->work.reset();
    lk.unlock();
    if (io_->thread.joinable()) io_->thread.join();
    fail_all(std::make_exception_ptr(ConnectionClosedError("the client was closed")));
  }

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
  void leave_parent_connection() {
    abandon_parent_io();
    if (state_ != State::kClosed) {
      state_ = State::kLost;
      lost_reason_ = "the process forked; the parent keeps its connection";
      next_attempt_ = {};
      backoff_ = std::chrono::milliseconds(25);
      start_io();  // if this throws, io_ stays empty and install() tries again
    }
  }

  // REQUIRES: mu_ held, forked_.
  void abandon_parent_io() {
    (void)io_.release();  // deliberately leaked; see Io
    // The parent's requests: their callers live in the parent. Leaked too: completing a
    // promise another (absent) thread may have been using is not safe here.
    (void)new std::unordered_map<std::uint64_t, detail::Completion>(std::move(pending_));
    pending_.clear();
    outbox_.clear();
    write_scheduled_ = false;
    fd_ = -1;
    forked_ = false;
  }

  // REQUIRES: mu_ held through `lk`.
  void wait_for_slot(std::unique_lock<std::mutex>& lk) {
    ++slot_waiters_;
    if (options_.request_timeout.count() > 0) {
      const bool got = slot_free_.wait_for(lk, options_.request_timeout, [&] {
        return pending_.size() < max_in_flight_ || state_ != State::kOpen || forked_;
      });
      --slot_waiters_;
      if (!got) {
        throw TimeoutError("the client's " + std::to_string(max_in_flight_) +
                           " requests in flight (ClientOptions::max_in_flight) were not answered "
                           "within " +
                           std::to_string(options_.request_timeout.count()) +
                           " ms; the request was not sent");
      }
      return;
    }
    slot_free_.wait(
        lk, [&] { return pending_.size() < max_in_flight_ || state_ != State::kOpen || forked_; });
    --slot_waiters_;
  }

  void check_open() const {  // REQUIRES: mu_ held
    if (state_ == State::kClosed) throw ConnectionClosedError("the client is closed");
    if (state_ == State::kLost) {
      throw ConnectionLostError("the connection to pasyn-writerd at " + path_ +
                                " was lost: " + lost_reason_);
    }
  }

  // Hands a connected descriptor to the I/O thread and waits until it reads from it. Never
  // waits on an event loop that may have stopped: the handler is posted under mu_ only while
  // the client is not closed, and close() posts its own under mu_ before stopping the loop.
  void install(int fd, std::uint32_t max_frame) {
    std::promise<void> installed;
    auto done = installed.get_future();
    {
      std::lock_guard lk(mu_);
      if (state_ == State::kClosed || forked_) {
        ::close(fd);
        throw ConnectionClosedError("the client is closed");
      }
      if (!io_) {  // starting a thread failed earlier (after a fork): try again
        try {
          start_io();
        } catch (...) {
          ::close(fd);
          throw;
        }
      }
      detail::asio::post(
          io_->context, [this, self = shared_from_this(), fd, max_frame, &installed] {
            std::unique_lock lk(mu_);
            if (state_ == State::kClosed) {  // close() came first: arm nothing, keep no descriptor
              lk.unlock();
              ::close(fd);
              installed.set_exception(
                  std::make_exception_ptr(ConnectionClosedError("the client is closed")));
              return;
            }
            lk.unlock();
            detail::error_code ec;
            io_->socket.close(ec);
            io_->socket.assign(detail::local(), fd, ec);
            if (ec) {
              ::close(fd);
              installed.set_exception(std::make_exception_ptr(
                  ConnectionLostError("cannot use the socket to " + path_ + ": " + ec.message())));
              return;
            }
            decoder_ = proto::FrameDecoder(std::max(max_frame, proto::kDefaultMaxFrame));
            busy_reads_ = false;
            std::uint64_t gen;
            {
              std::lock_guard relock(mu_);
              gen = ++generation_;
              fd_ = fd;
              max_frame_ = max_frame;
              outbox_.clear();
              write_scheduled_ = false;
              backoff_ = std::chrono::milliseconds(25);
              if (state_ != State::kClosed) state_ = State::kOpen;
            }
            do_read(gen);
            installed.set_value();
          });
    }
    done.get();
  }

  // Sends the outbox from the calling thread (no hand-off to the I/O thread, which costs a
  // wake-up per request when idle). Whatever the socket does not take at once is left to the
  // I/O thread. The send happens under mu_, so lose() and close() cannot close the descriptor
  // underneath it. REQUIRES: mu_ held through `lk`, no write scheduled.
  void send_now(std::unique_lock<std::mutex>& lk) {
    const std::size_t sent = proto::send_nonblocking(fd_, outbox_.data(), outbox_.size());
    if (sent == outbox_.size()) {
      outbox_.clear();
      return;
    }
    outbox_.erase(outbox_.begin(), outbox_.begin() + static_cast<std::ptrdiff_t>(sent));
    write_scheduled_ = true;
    lk.unlock();
    detail::asio::post(io_->context, [self = shared_from_this()] { self->do_write(); });
  }

  void do_write() {
    std::uint64_t gen;
    {
      std::lock_guard lk(mu_);
      if (outbox_.empty() || state_ != State::kOpen) {
        write_scheduled_ = false;
        return;
      }
      writing_.clear();
      writing_.swap(outbox_);
      gen = generation_;
    }
    detail::asio::async_write(io_->socket, detail::asio::buffer(writing_),
                              [self = shared_from_this(), gen](detail::error_code ec, std::size_t) {
                                if (gen != self->generation()) return;  // an old connection's write
                                if (ec) return self->lose("write failed: " + ec.message());
                                self->do_write();
                              });
  }

  std::uint64_t generation() const {
    std::lock_guard lk(mu_);
    return generation_;
  }

  void do_read(std::uint64_t gen) {
    auto space = decoder_.prepare(busy_reads_ ? detail::kLargeRead : detail::kSmallRead);
    offered_ = space.size();
    io_->socket.async_read_some(
        detail::asio::buffer(space.data(), space.size()),
        [self = shared_from_this(), gen](detail::error_code ec, std::size_t n) {
          if (gen != self->generation()) return;  // an old connection
          self->on_read(ec, n, gen);
        });
  }

  void on_read(detail::error_code ec, std::size_t n, std::uint64_t gen) {
    if (ec) {
      return lose(ec == detail::asio::error::eof ? std::string("the daemon closed the connection")
                                                 : "read failed: " + ec.message());
    }
    decoder_.commit(n);
    busy_reads_ = n == offered_;
    proto::FrameView frame;
    for (;;) {
      const auto status = decoder_.next(frame);
      if (status == proto::FrameDecoder::Status::kNeedMore) break;
      if (status == proto::FrameDecoder::Status::kError) {
        return lose("malformed reply: " + decoder_.error());
      }
      detail::Completion done;
      bool found = false;
      {
        std::lock_guard lk(mu_);
        auto it = pending_.find(frame.request_id);
        if (it != pending_.end()) {
          done = std::move(it->second);
          pending_.erase(it);
          found = true;
          if (slot_waiters_ > 0 && pending_.size() < max_in_flight_) slot_free_.notify_all();
        }
      }
      if (!found) {
        // Request id 0 carries a connection-level error (the daemon closes after it).
        proto::ErrorReply e;
        std::string why;
        if (frame.request_id == 0 &&
            frame.type == static_cast<std::uint8_t>(proto::MsgType::kError) &&
            proto::decode_error(frame.payload, e, why)) {
          return lose("the daemon reported: " + e.message);
        }
        return lose("reply for unknown request id " + std::to_string(frame.request_id));
      }
      if (!done.claim() && frame.type == static_cast<std::uint8_t>(proto::MsgType::kOk)) {
        roll_back_abandoned(frame.request_id, gen);
      }
      done.complete(frame);
    }
    do_read(gen);
  }

  // I/O thread: the daemon granted a BEGIN whose caller gave up waiting (wait_begin). Nobody
  // owns that transaction: roll it back now, so that it holds up no writer.
  void roll_back_abandoned(std::uint64_t transaction, std::uint64_t gen) {
    try {
      submit(
          [transaction](std::vector<std::uint8_t>& out, std::uint64_t id) {
            proto::encode_transaction_end(out, proto::MsgType::kRollback, id, transaction);
          },
          detail::Completion(detail::Completion::Kind::kEmpty, proto::MsgType::kOk,
                             std::promise<void>()),
          gen, false);
    } catch (...) {  // the connection is gone or closed: the daemon rolls back by itself
    }
  }

  // I/O thread: the connection is gone; fail everything waiting, promptly.
  void lose(const std::string& why) {
    {
      std::lock_guard lk(mu_);
      if (state_ != State::kOpen) return;  // closed (close() fails what is pending), or lost
      state_ = State::kLost;
      lost_reason_ = why;  // the first reason: a cancelled read afterwards does not replace it
      outbox_.clear();     // never sent on a later connection: those calls fail below
      next_attempt_ = {};
      slot_free_.notify_all();
    }
    detail::error_code ignored;
    io_->socket.close(ignored);
    fail_all(std::make_exception_ptr(
        ConnectionLostError("the connection to pasyn-writerd at " + path_ + " was lost (" + why +
                            "); the outcome of requests in flight is unknown")));
  }

  void fail_all(std::exception_ptr error) {
    std::unordered_map<std::uint64_t, detail::Completion> failed;
    {
      std::lock_guard lk(mu_);
      failed.swap(pending_);
      slot_free_.notify_all();
    }
    for (auto& [id, done] : failed) done.fail(error);
  }

  const std::string path_;
  const ClientOptions options_;
  const std::size_t max_in_flight_;
  std::unique_ptr<Io> io_;             // GUARDED_BY(mu_) for replacement; see Io
  int fd_ = -1;                        // GUARDED_BY(mu_): the socket's descriptor, for send_now()
  proto::FrameDecoder decoder_;        // I/O thread only (after the handshake)
  std::size_t offered_ = 0;            // I/O thread: bytes the read in flight may fill
  bool busy_reads_ = false;            // I/O thread: the last read filled what it was offered
  std::vector<std::uint8_t> writing_;  // I/O thread only: the write in flight

  mutable std::mutex mu_;
  State state_ = State::kOpen;                         // GUARDED_BY(mu_)
  bool forked_ = false;                                // GUARDED_BY(mu_): see mark_forked_in_child
  std::string lost_reason_;                            // GUARDED_BY(mu_)
  std::uint64_t next_id_ = 1;                          // GUARDED_BY(mu_)
  std::uint32_t max_frame_ = proto::kDefaultMaxFrame;  // GUARDED_BY(mu_)
  std::uint64_t generation_ = 0;           // GUARDED_BY(mu_); written on the I/O thread only
  std::chrono::milliseconds backoff_{25};  // GUARDED_BY(mu_)
  std::chrono::steady_clock::time_point next_attempt_;             // GUARDED_BY(mu_)
  std::mutex connect_mu_;                                          // one reconnect at a time
  std::vector<std::uint8_t> outbox_;                               // GUARDED_BY(mu_)
  bool write_scheduled_ = false;                                   // GUARDED_BY(mu_)
  std::unordered_map<std::uint64_t, detail::Completion> pending_;  // GUARDED_BY(mu_)
  std::condition_variable slot_free_;  // pending_ dropped below max_in_flight_, or not kOpen
  std::size_t slot_waiters_ = 0;       // GUARDED_BY(mu_)
};

}  // namespace pasyn
