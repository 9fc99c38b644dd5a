// MultiplexedClient: one socket, one I/O thread, many calling threads.
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
//   A completion holds its promise by value: a request costs its promise's shared state and a
//   node in the pending table, nothing else on the heap.
// * When the connection fails, every pending completion fails with ConnectionLostError at once.
//   The next call reconnects (with a backoff while the daemon stays away); the requests of the
//   old connection are never re-sent, and handlers of the old socket are recognised by their
//   generation and ignored.
#include <poll.h>
#include <pthread.h>
#include <sqlite3.h>
#include <sys/socket.h>
#include <sys/un.h>
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
#include <pasyn/client.hpp>
#include <pasyn/proto/codec.hpp>
#include <pasyn/proto/socket_send.hpp>
#include <thread>
#include <unordered_map>
#include <unordered_set>
#include <variant>

#include "process.hpp"

namespace pasyn {
namespace {

namespace asio = boost::asio;
using boost::system::error_code;
using local = asio::local::stream_protocol;

// Reads offer 4 KiB, or 64 KiB right after a read that filled what it was offered; a frame in
// progress always gets room for all of it.
constexpr std::size_t kSmallRead = 4096;
constexpr std::size_t kLargeRead = 64 * 1024;
/// The extended code of the OperationalError for a transaction the daemon rolled back.
constexpr int kTransactionEndedCode = SQLITE_ABORT_ROLLBACK;

std::exception_ptr error_from_reply(const proto::ErrorReply& e) {
  try {
    if (e.domain == proto::ErrorDomain::kSqlite) {
      throw_sqlite_error(e.message, e.code, e.extended_code);
    }
    switch (static_cast<proto::PasynCode>(e.code)) {
      case proto::PasynCode::kProtocol:
        throw ProtocolError("pasyn-writerd reported a protocol error: " + e.message);
      case proto::PasynCode::kMisuse:
        throw ProgrammingError(e.message, SQLITE_MISUSE, SQLITE_MISUSE);
      case proto::PasynCode::kShuttingDown:
        throw OperationalError(e.message, SQLITE_ABORT, SQLITE_ABORT);
      case proto::PasynCode::kTimeout:
        throw TimeoutError(e.message);
      case proto::PasynCode::kTooLarge:
        throw DataError(e.message, SQLITE_TOOBIG, SQLITE_TOOBIG);
      case proto::PasynCode::kTransactionEnded:
        throw OperationalError(e.message, SQLITE_ABORT, kTransactionEndedCode);
      case proto::PasynCode::kLimit:  // e.g. --max-connections: worth retrying later
        throw OperationalError(e.message, SQLITE_BUSY, SQLITE_BUSY);
      case proto::PasynCode::kPermission:
        throw OperationalError(e.message, SQLITE_PERM, SQLITE_PERM);
    }
    throw Error("pasyn-writerd error " + std::to_string(e.code) + ": " + e.message);
  } catch (...) {
    return std::current_exception();
  }
}

[[noreturn]] void throw_protocol(const std::string& why) {
  throw ProtocolError("malformed reply from pasyn-writerd: " + why);
}

// Reply decoders: turn a frame into the call's value, or throw the error it carries.
void expect(const proto::FrameView& f, proto::MsgType type) {
  const auto got = static_cast<proto::MsgType>(f.type);
  if (got == proto::MsgType::kError) {
    proto::ErrorReply e;
    std::string why;
    if (!proto::decode_error(f.payload, e, why)) throw_protocol(why);
    std::rethrow_exception(error_from_reply(e));
  }
  if (got != type) {
    throw_protocol(std::string("expected ") + proto::to_string(type) + ", got " +
                   proto::to_string(got));
  }
}

proto::Result decode_result(const proto::FrameView& f) {
  expect(f, proto::MsgType::kResult);
  proto::Result r;
  std::string why;
  if (!proto::decode_result(f.payload, r, why)) throw_protocol(why);
  return r;
}

void decode_nothing(const proto::FrameView& f, proto::MsgType type) {
  expect(f, type);
  std::string why;
  if (!proto::decode_empty(f.payload, why)) throw_protocol(why);
}

/// Completes one request: turns its reply frame into the call's value, or fails it. Holds the
/// promise by value (no allocation beyond the promise's own state), and is what the pending
/// table stores per request id.
class Completion {
 public:
  enum class Kind : std::uint8_t {
    kChanges,  // RESULT -> rows changed
    kRowid,    // RESULT -> rowid inserted
    kRows,     // RESULT -> rows
    kResult,   // RESULT -> nothing
    kEmpty,    // an empty reply of type `reply`
  };

  /// States of a BEGIN's claim: its caller still waits, gave up (wait_begin), or the reply
  /// was taken for it.
  static constexpr int kWaiting = 0;
  static constexpr int kAbandoned = 1;
  static constexpr int kDelivered = 2;

  Completion() = default;
  template <typename T>
  Completion(Kind kind, proto::MsgType reply, std::promise<T> promise,
             std::shared_ptr<std::atomic<int>> claim = nullptr)
      : kind_(kind), reply_(reply), promise_(std::move(promise)), claim_(std::move(claim)) {}

  /// Takes the reply for the caller; false if the caller has abandoned the request (only a
  /// BEGIN can be abandoned).
  bool claim() noexcept {
    if (!claim_) return true;
    int expected = kWaiting;
    return claim_->compare_exchange_strong(expected, kDelivered) || expected != kAbandoned;
  }

  void complete(const proto::FrameView& f) noexcept {
    try {
      switch (kind_) {
        case Kind::kChanges:
          return get<std::int64_t>().set_value(decode_result(f).changes);
        case Kind::kRowid:
          return get<std::int64_t>().set_value(decode_result(f).last_rowid);
        case Kind::kRows:
          return get<std::vector<Row>>().set_value(std::move(decode_result(f).rows));
        case Kind::kResult:
          decode_result(f);
          return get<void>().set_value();
        case Kind::kEmpty:
          decode_nothing(f, reply_);
          return get<void>().set_value();
      }
    } catch (...) {
      fail(std::current_exception());
    }
  }

  void fail(std::exception_ptr error) noexcept {
    std::visit(
        [&](auto& p) {
          if constexpr (!std::is_same_v<std::decay_t<decltype(p)>, std::monostate>) {
            p.set_exception(error);
          }
        },
        promise_);
  }

 private:
  template <typename T>
  std::promise<T>& get() {
    return std::get<std::promise<T>>(promise_);
  }

  Kind kind_ = Kind::kResult;
  proto::MsgType reply_ = proto::MsgType::kResult;
  std::variant<std::monostate, std::promise<std::int64_t>, std::promise<std::vector<Row>>,
               std::promise<void>>
      promise_;
  std::shared_ptr<std::atomic<int>> claim_;  // BEGIN only
};

}  // namespace

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
    const int fd = connect_nonblocking(deadline);
    std::uint32_t max_frame = 0;
    try {
      max_frame = handshake(fd, deadline);
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
      fd = connect_nonblocking(deadline);
      max_frame = handshake(fd, deadline);
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
  Sent submit(Encode&& encode, Completion completion, std::optional<std::uint64_t> tx_generation,
              bool bounded) {
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
      asio::post(io_->context, [self = shared_from_this()] { self->do_write(); });
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
      int expected = Completion::kWaiting;
      if (claim.compare_exchange_strong(expected, Completion::kAbandoned)) {
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
    asio::post(io_->context, [this] {
      std::lock_guard lk(mu_);  // no send_now() in progress on this descriptor
      error_code ignored;
      io_->socket.shutdown(local::socket::shutdown_both, ignored);
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
    asio::io_context context{1};
    asio::executor_work_guard<asio::io_context::executor_type> work{asio::make_work_guard(context)};
    local::socket socket{context};
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
    (void)new std::unordered_map<std::uint64_t, Completion>(std::move(pending_));
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

  // Connects without blocking past `deadline` (a Unix socket whose listen backlog is full
  // refuses with EAGAIN until the daemon accepts: retry until the deadline).
  int connect_nonblocking(std::chrono::steady_clock::time_point deadline) {
    sockaddr_un addr{};
    if (path_.size() >= sizeof addr.sun_path) {
      throw ConnectionLostError("socket path is too long for a Unix socket: " + path_);
    }
    addr.sun_family = AF_UNIX;
    std::memcpy(addr.sun_path, path_.c_str(), path_.size() + 1);
    const int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) throw ConnectionLostError(std::string("socket(): ") + std::strerror(errno));
    for (;;) {
      if (::connect(fd, reinterpret_cast<const sockaddr*>(&addr), sizeof addr) == 0) {
        check_server_uid(fd);
        return fd;
      }
      const int err = errno;
      if (err == EINTR) continue;
      if ((err == EAGAIN || err == EINPROGRESS) && std::chrono::steady_clock::now() < deadline) {
        ::poll(nullptr, 0, 5);
        continue;
      }
      ::close(fd);
      if (err == EAGAIN || err == EINPROGRESS) {
        throw TimeoutError("pasyn-writerd at " + path_ + " accepted no connection within " +
                           std::to_string(options_.connect_timeout.count()) + " ms");
      }
      throw ConnectionLostError("cannot connect to pasyn-writerd at " + path_ + ": " +
                                std::strerror(err));
    }
  }

  // ClientOptions::expect_server_uid: the peer's credentials, as the kernel recorded them when
  // the server called listen(). Closes `fd` and throws on a mismatch.
  void check_server_uid(int fd) {
    if (!options_.expect_server_uid) return;
    ucred cred{};
    socklen_t len = sizeof cred;
    if (::getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) != 0) {
      const int err = errno;
      ::close(fd);
      throw ConnectionLostError("cannot read the credentials of the server at " + path_ + ": " +
                                std::strerror(err));
    }
    if (cred.uid != *options_.expect_server_uid) {
      ::close(fd);
      throw ConnectionLostError("the server at " + path_ + " runs as uid " +
                                std::to_string(cred.uid) + ", not the expected uid " +
                                std::to_string(*options_.expect_server_uid) +
                                " (ClientOptions::expect_server_uid); refusing to use it");
    }
  }

  // Waits until the descriptor is ready for `events`, or throws once `deadline` has passed.
  void wait_ready(int fd, short events, std::chrono::steady_clock::time_point deadline) {
    for (;;) {
      const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
          deadline - std::chrono::steady_clock::now());
      if (left.count() <= 0) {
        throw TimeoutError("no handshake from pasyn-writerd at " + path_ + " within " +
                           std::to_string(options_.connect_timeout.count()) + " ms");
      }
      pollfd p{fd, events, 0};
      const int rc = ::poll(&p, 1, static_cast<int>(left.count()));
      if (rc > 0) return;
      if (rc < 0 && errno != EINTR) {
        throw ConnectionLostError(std::string("poll(): ") + std::strerror(errno));
      }
    }
  }

  // HELLO / HELLO_OK on the non-blocking socket, all of it bounded by `deadline`.
  // Returns the daemon's maximum frame size.
  std::uint32_t handshake(int fd, std::chrono::steady_clock::time_point deadline) {
    std::vector<std::uint8_t> hello;
    proto::encode_hello(hello, proto::Hello{});
    std::size_t sent = 0;
    while ((sent += proto::send_nonblocking(fd, hello.data() + sent, hello.size() - sent)) <
           hello.size()) {
      if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) {
        throw ConnectionLostError("handshake with pasyn-writerd at " + path_ +
                                  " failed: " + std::strerror(errno));
      }
      wait_ready(fd, POLLOUT, deadline);
    }
    proto::FrameDecoder decoder(proto::kDefaultMaxFrame);
    proto::FrameView frame;
    auto status = proto::FrameDecoder::Status::kNeedMore;
    while ((status = decoder.next(frame)) == proto::FrameDecoder::Status::kNeedMore) {
      auto buf = decoder.prepare(4096);
      const ssize_t n = ::recv(fd, buf.data(), buf.size(), MSG_DONTWAIT);
      if (n > 0) {
        decoder.commit(static_cast<std::size_t>(n));
      } else if (n == 0) {
        throw ConnectionLostError("pasyn-writerd at " + path_ +
                                  " closed the connection during the handshake");
      } else if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR) {
        wait_ready(fd, POLLIN, deadline);
      } else {
        throw ConnectionLostError("handshake with pasyn-writerd at " + path_ +
                                  " failed: " + std::strerror(errno));
      }
    }
    if (status == proto::FrameDecoder::Status::kError) throw_protocol(decoder.error());
    expect(frame, proto::MsgType::kHelloOk);
    proto::HelloOk ok;
    std::string why;
    if (!proto::decode_hello_ok(frame.payload, ok, why)) throw_protocol(why);
    if (ok.version != proto::kVersion) {
      throw ProtocolError("pasyn-writerd speaks protocol version " + std::to_string(ok.version) +
                          ", this client " + std::to_string(proto::kVersion));
    }
    return ok.max_frame;
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
      asio::post(io_->context, [this, self = shared_from_this(), fd, max_frame, &installed] {
        std::unique_lock lk(mu_);
        if (state_ == State::kClosed) {  // close() came first: arm nothing, keep no descriptor
          lk.unlock();
          ::close(fd);
          installed.set_exception(
              std::make_exception_ptr(ConnectionClosedError("the client is closed")));
          return;
        }
        lk.unlock();
        error_code ec;
        io_->socket.close(ec);
        io_->socket.assign(local(), fd, ec);
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
    asio::post(io_->context, [self = shared_from_this()] { self->do_write(); });
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
    asio::async_write(io_->socket, asio::buffer(writing_),
                      [self = shared_from_this(), gen](error_code ec, std::size_t) {
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
    auto space = decoder_.prepare(busy_reads_ ? kLargeRead : kSmallRead);
    offered_ = space.size();
    io_->socket.async_read_some(asio::buffer(space.data(), space.size()),
                                [self = shared_from_this(), gen](error_code ec, std::size_t n) {
                                  if (gen != self->generation()) return;  // an old connection
                                  self->on_read(ec, n, gen);
                                });
  }

  void on_read(error_code ec, std::size_t n, std::uint64_t gen) {
    if (ec) {
      return lose(ec == asio::error::eof ? std::string("the daemon closed the connection")
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
      Completion done;
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
          Completion(Completion::Kind::kEmpty, proto::MsgType::kOk, std::promise<void>()), gen,
          false);
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
    error_code ignored;
    io_->socket.close(ignored);
    fail_all(std::make_exception_ptr(
        ConnectionLostError("the connection to pasyn-writerd at " + path_ + " was lost (" + why +
                            "); the outcome of requests in flight is unknown")));
  }

  void fail_all(std::exception_ptr error) {
    std::unordered_map<std::uint64_t, Completion> failed;
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
  std::chrono::steady_clock::time_point next_attempt_;     // GUARDED_BY(mu_)
  std::mutex connect_mu_;                                  // one reconnect at a time
  std::vector<std::uint8_t> outbox_;                       // GUARDED_BY(mu_)
  bool write_scheduled_ = false;                           // GUARDED_BY(mu_)
  std::unordered_map<std::uint64_t, Completion> pending_;  // GUARDED_BY(mu_)
  std::condition_variable slot_free_;  // pending_ dropped below max_in_flight_, or not kOpen
  std::size_t slot_waiters_ = 0;       // GUARDED_BY(mu_)
};

namespace {

// Which transaction a request belongs to: the connection that began it and its number (the
// request id of its BEGIN, PROTOCOL.md §6.2).
struct TxRef {
  std::uint64_t generation = 0;
  std::uint64_t number = 0;
};

// How an execute-family request is sent: inside a transaction, or with an idempotency key
// (PROTOCOL.md §6), or plainly.
struct Mode {
  const TxRef* tx = nullptr;
  std::string_view key;
};
constexpr Mode kPlain{};
Mode in_tx(const TxRef& tx) { return Mode{&tx, {}}; }

Mode keyed(const WriteOptions& options) {
  if (options.idempotency_key.size() > proto::kMaxIdempotencyKey) {
    throw ProgrammingError(
        "an idempotency key is at most " + std::to_string(proto::kMaxIdempotencyKey) + " bytes",
        SQLITE_MISUSE, SQLITE_MISUSE);
  }
  return Mode{nullptr, options.idempotency_key};
}

// Sends one request whose frame `encode(out, id)` appends; its reply completes as `kind`.
template <typename T, typename Encode>
std::future<T> send(MultiplexedClient::Impl& impl, Mode mode, Encode encode, Completion::Kind kind,
                    proto::MsgType reply = proto::MsgType::kResult) {
  std::promise<T> promise;
  auto future = promise.get_future();
  // A transaction's requests go out on its own connection or not at all, and do not wait for
  // an in-flight slot: the transaction can always finish, and so release the writes waiting.
  impl.submit(
      [&](std::vector<std::uint8_t>& out, std::uint64_t id) {
        const std::size_t start = out.size();
        encode(out, id);
        if (mode.tx) proto::add_transaction_number(out, start, mode.tx->number);
        if (!mode.key.empty()) proto::add_idempotency_key(out, start, mode.key);
      },
      Completion(kind, reply, std::move(promise)),
      mode.tx ? std::optional(mode.tx->generation) : std::nullopt, mode.tx == nullptr);
  return future;
}

std::future<std::int64_t> send_statement(MultiplexedClient::Impl& impl, Mode mode,
                                         proto::MsgType type, std::string_view sql,
                                         const Params& params) {
  return send<std::int64_t>(
      impl, mode,
      [&](std::vector<std::uint8_t>& out, std::uint64_t id) {
        proto::encode_statement(out, type, id, sql, params);
      },
      type == proto::MsgType::kExecuteRowid ? Completion::Kind::kRowid
                                            : Completion::Kind::kChanges);
}

std::future<std::vector<Row>> send_fetch(MultiplexedClient::Impl& impl, Mode mode,
                                         std::string_view sql, const Params& params) {
  return send<std::vector<Row>>(
      impl, mode,
      [&](std::vector<std::uint8_t>& out, std::uint64_t id) {
        proto::encode_statement(out, proto::MsgType::kExecuteFetch, id, sql, params);
      },
      Completion::Kind::kRows);
}

std::future<std::int64_t> send_many(MultiplexedClient::Impl& impl, Mode mode, std::string_view sql,
                                    const std::vector<Params>& rows) {
  return send<std::int64_t>(
      impl, mode,
      [&](std::vector<std::uint8_t>& out, std::uint64_t id) {
        proto::encode_many(out, id, sql, rows);
      },
      Completion::Kind::kChanges);
}

std::future<void> send_script(MultiplexedClient::Impl& impl, Mode mode, std::string_view sql) {
  return send<void>(
      impl, mode,
      [&](std::vector<std::uint8_t>& out, std::uint64_t id) { proto::encode_script(out, id, sql); },
      Completion::Kind::kResult);
}

// COMMIT and ROLLBACK of transaction `tx`, answered by OK.
std::future<void> send_transaction_end(MultiplexedClient::Impl& impl, const TxRef& tx,
                                       proto::MsgType type) {
  std::promise<void> promise;
  auto future = promise.get_future();
  impl.submit([&](std::vector<std::uint8_t>& out,
                  std::uint64_t id) { proto::encode_transaction_end(out, type, id, tx.number); },
              Completion(Completion::Kind::kEmpty, proto::MsgType::kOk, std::move(promise)),
              tx.generation, false);
  return future;
}

// PING and SHUTDOWN: an empty request answered by an empty reply.
std::future<void> send_empty(MultiplexedClient::Impl& impl, proto::MsgType type,
                             proto::MsgType reply) {
  return send<void>(
      impl, kPlain,
      [type](std::vector<std::uint8_t>& out, std::uint64_t id) {
        proto::encode_empty(out, type, id);
      },
      Completion::Kind::kEmpty, reply);
}

// STATS, CHECKPOINT, BACKUP: answered with a RESULT of (name, value) rows.
Report send_admin(MultiplexedClient::Impl& impl, proto::MsgType type,
                  std::optional<std::string_view> text) {
  auto rows = impl.wait(send<std::vector<Row>>(
      impl, kPlain,
      [&](std::vector<std::uint8_t>& out, std::uint64_t id) {
        if (text) {
          proto::encode_text(out, type, id, *text);
        } else {
          proto::encode_empty(out, type, id);
        }
      },
      Completion::Kind::kRows));
  Report report;
  report.reserve(rows.size());
  for (auto& row : rows) {
    if (row.size() != 2 || type_of(row[0]) != ValueType::kText) {
      throw ProtocolError("malformed report from the daemon");
    }
    report.emplace_back(std::move(std::get<std::string>(row[0])), std::move(row[1]));
  }
  return report;
}

std::optional<Row> first_row(std::vector<Row> rows) {
  if (rows.empty()) return std::nullopt;
  return std::move(rows.front());
}

}  // namespace

// ---- MultiplexedClient ------------------------------------------------------------------------

struct Transaction::Impl {
  std::shared_ptr<MultiplexedClient::Impl> client;
  TxRef tx;  // the connection that began it, and its number there
  bool finished = false;
};

MultiplexedClient::MultiplexedClient(const std::string& socket_path, ClientOptions options)
    : impl_(std::make_shared<Impl>(socket_path, options)) {
  impl_->connect();
}

MultiplexedClient::MultiplexedClient(MultiplexedClient&&) noexcept = default;
MultiplexedClient& MultiplexedClient::operator=(MultiplexedClient&& other) noexcept {
  if (this != &other) {
    if (impl_) impl_->close();
    impl_ = std::move(other.impl_);
  }
  return *this;
}
MultiplexedClient::~MultiplexedClient() {
  if (impl_) impl_->close();
}

MultiplexedClient::Impl& MultiplexedClient::impl() const {
  if (!impl_) throw ConnectionClosedError("the client was moved from");
  return *impl_;
}

std::future<std::int64_t> MultiplexedClient::execute_async(std::string_view sql,
                                                           const Params& params) {
  return send_statement(impl(), kPlain, proto::MsgType::kExecute, sql, params);
}

std::future<std::int64_t> MultiplexedClient::execute_returning_rowid_async(std::string_view sql,
                                                                           const Params& params) {
  return send_statement(impl(), kPlain, proto::MsgType::kExecuteRowid, sql, params);
}

std::future<std::int64_t> MultiplexedClient::execute_many_async(
    std::string_view sql, const std::vector<Params>& params_batch) {
  return send_many(impl(), kPlain, sql, params_batch);
}

std::future<void> MultiplexedClient::executescript_async(std::string_view sql) {
  return send_script(impl(), kPlain, sql);
}

std::future<std::vector<Row>> MultiplexedClient::execute_fetchall_async(std::string_view sql,
                                                                        const Params& params) {
  return send_fetch(impl(), kPlain, sql, params);
}

std::future<std::int64_t> MultiplexedClient::execute_async(std::string_view sql,
                                                           const Params& params,
                                                           const WriteOptions& options) {
  return send_statement(impl(), keyed(options), proto::MsgType::kExecute, sql, params);
}

std::future<std::int64_t> MultiplexedClient::execute_returning_rowid_async(
    std::string_view sql, const Params& params, const WriteOptions& options) {
  return send_statement(impl(), keyed(options), proto::MsgType::kExecuteRowid, sql, params);
}

std::future<std::int64_t> MultiplexedClient::execute_many_async(
    std::string_view sql, const std::vector<Params>& params_batch, const WriteOptions& options) {
  return send_many(impl(), keyed(options), sql, params_batch);
}

std::future<void> MultiplexedClient::executescript_async(std::string_view sql,
                                                         const WriteOptions& options) {
  return send_script(impl(), keyed(options), sql);
}

std::int64_t MultiplexedClient::execute(std::string_view sql, const Params& params,
                                        const WriteOptions& options) {
  return impl().wait(execute_async(sql, params, options));
}

std::int64_t MultiplexedClient::execute_returning_rowid(std::string_view sql, const Params& params,
                                                        const WriteOptions& options) {
  return impl().wait(execute_returning_rowid_async(sql, params, options));
}

std::int64_t MultiplexedClient::execute_many(std::string_view sql,
                                             const std::vector<Params>& params_batch,
                                             const WriteOptions& options) {
  return impl().wait(execute_many_async(sql, params_batch, options));
}

void MultiplexedClient::executescript(std::string_view sql, const WriteOptions& options) {
  impl().wait(executescript_async(sql, options));
}

std::future<void> MultiplexedClient::ping_async() {
  return send_empty(impl(), proto::MsgType::kPing, proto::MsgType::kPong);
}

std::int64_t MultiplexedClient::execute(std::string_view sql, const Params& params) {
  return impl().wait(execute_async(sql, params));
}

std::int64_t MultiplexedClient::execute_returning_rowid(std::string_view sql,
                                                        const Params& params) {
  return impl().wait(execute_returning_rowid_async(sql, params));
}

std::int64_t MultiplexedClient::execute_many(std::string_view sql,
                                             const std::vector<Params>& params_batch) {
  return impl().wait(execute_many_async(sql, params_batch));
}

void MultiplexedClient::executescript(std::string_view sql) {
  impl().wait(executescript_async(sql));
}

std::vector<Row> MultiplexedClient::execute_fetchall(std::string_view sql, const Params& params) {
  return impl().wait(execute_fetchall_async(sql, params));
}

std::optional<Row> MultiplexedClient::execute_fetchone(std::string_view sql, const Params& params) {
  return first_row(execute_fetchall(sql, params));
}

bool MultiplexedClient::ping() {
  impl().wait(ping_async());
  return true;
}

void MultiplexedClient::shutdown_server() {
  impl().wait(send_empty(impl(), proto::MsgType::kShutdown, proto::MsgType::kShutdownOk));
}

Report MultiplexedClient::stats() {
  return send_admin(impl(), proto::MsgType::kStats, std::nullopt);
}

Report MultiplexedClient::checkpoint(std::string_view mode) {
  return send_admin(impl(), proto::MsgType::kCheckpoint, mode);
}

Report MultiplexedClient::backup(std::string_view path) {
  return send_admin(impl(), proto::MsgType::kBackup, path);
}

Transaction MultiplexedClient::begin() {
  auto& i = impl();
  auto claim = std::make_shared<std::atomic<int>>(Completion::kWaiting);
  std::promise<void> promise;
  auto granted = promise.get_future();
  const auto sent =
      i.submit([](std::vector<std::uint8_t>& out,
                  std::uint64_t id) { proto::encode_empty(out, proto::MsgType::kBegin, id); },
               Completion(Completion::Kind::kEmpty, proto::MsgType::kOk, std::move(promise), claim),
               std::nullopt, true);
  i.wait_begin(std::move(granted), *claim);
  auto tx = std::make_unique<Transaction::Impl>();
  tx->client = impl_;
  tx->tx = TxRef{sent.generation, sent.id};
  return Transaction(std::move(tx));
}

void MultiplexedClient::close() {
  if (impl_) impl_->close();
}

bool MultiplexedClient::connected() const noexcept { return impl_ && impl_->connected(); }

const std::string& MultiplexedClient::socket_path() const noexcept {
  static const std::string empty;
  return impl_ ? impl_->path() : empty;
}

// ---- Transaction ------------------------------------------------------------------------------

Transaction::Transaction(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Transaction::Transaction(Transaction&&) noexcept = default;
Transaction& Transaction::operator=(Transaction&& other) noexcept {
  if (this != &other) {
    abandon();
    impl_ = std::move(other.impl_);
  }
  return *this;
}
Transaction::~Transaction() { abandon(); }

// Sends ROLLBACK without waiting for its reply (requests of one connection run in order, so
// nothing sent later can run inside this transaction), on the transaction's own connection
// only: never a round trip, never a reconnect, whatever the state of the connection.
void Transaction::abandon() noexcept {
  if (!impl_ || impl_->finished) return;
  impl_->finished = true;
  try {
    (void)send_transaction_end(*impl_->client, impl_->tx, proto::MsgType::kRollback);
  } catch (...) {  // the daemon rolls back anyway when the connection or the transaction ends
  }
}

bool Transaction::finished() const noexcept { return !impl_ || impl_->finished; }

MultiplexedClient::Impl& Transaction::open() const {
  if (!impl_)
    throw ProgrammingError("the transaction was moved from", SQLITE_MISUSE, SQLITE_MISUSE);
  if (impl_->finished) {
    throw ProgrammingError("the transaction is finished (committed or rolled back)", SQLITE_MISUSE,
                           SQLITE_MISUSE);
  }
  return *impl_->client;
}

template <typename Send>
auto Transaction::call(Send send) {
  auto& client = open();
  try {
    return client.wait(send(client, impl_->tx));
  } catch (const OperationalError& e) {
    // The daemon rolled the transaction back (idle timeout, a statement that ended it, ...).
    if (e.extended_code() == kTransactionEndedCode) impl_->finished = true;
    throw;
  } catch (const ConnectionLostError&) {
    impl_->finished = true;  // the daemon rolls back the transaction of a lost connection
    throw;
  } catch (const ConnectionClosedError&) {
    impl_->finished = true;
    throw;
  }
}

std::int64_t Transaction::execute(std::string_view sql, const Params& params) {
  return call([&](auto& c, const TxRef& tx) {
    return send_statement(c, in_tx(tx), proto::MsgType::kExecute, sql, params);
  });
}

std::int64_t Transaction::execute_returning_rowid(std::string_view sql, const Params& params) {
  return call([&](auto& c, const TxRef& tx) {
    return send_statement(c, in_tx(tx), proto::MsgType::kExecuteRowid, sql, params);
  });
}

std::int64_t Transaction::execute_many(std::string_view sql,
                                       const std::vector<Params>& params_batch) {
  return call([&](auto& c, const TxRef& tx) { return send_many(c, in_tx(tx), sql, params_batch); });
}

void Transaction::executescript(std::string_view sql) {
  call([&](auto& c, const TxRef& tx) { return send_script(c, in_tx(tx), sql); });
}

std::vector<Row> Transaction::execute_fetchall(std::string_view sql, const Params& params) {
  return call([&](auto& c, const TxRef& tx) { return send_fetch(c, in_tx(tx), sql, params); });
}

std::optional<Row> Transaction::execute_fetchone(std::string_view sql, const Params& params) {
  return first_row(execute_fetchall(sql, params));
}

void Transaction::commit() {
  call([&](auto& c, const TxRef& tx) {
    impl_->finished = true;  // whatever the outcome, the daemon ends the transaction
    return send_transaction_end(c, tx, proto::MsgType::kCommit);
  });
}

void Transaction::rollback() {
  call([&](auto& c, const TxRef& tx) {
    impl_->finished = true;
    return send_transaction_end(c, tx, proto::MsgType::kRollback);
  });
}

}  // namespace pasyn
