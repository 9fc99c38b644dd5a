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
#include <sqlite3.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/local/stream_protocol.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/read.hpp>
#include <boost/asio/write.hpp>
#include <chrono>
#include <cstring>
#include <mutex>
#include <pasyn/client.hpp>
#include <pasyn/proto/codec.hpp>
#include <thread>
#include <unordered_map>
#include <variant>

#include "socket_send.hpp"

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

  Completion() = default;
  template <typename T>
  Completion(Kind kind, proto::MsgType reply, std::promise<T> promise)
      : kind_(kind), reply_(reply), promise_(std::move(promise)) {}

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
};

}  // namespace

class MultiplexedClient::Impl : public std::enable_shared_from_this<Impl> {
 public:
  Impl(std::string path, ClientOptions options)
      : path_(std::move(path)), options_(options), work_(asio::make_work_guard(io_)) {}

  ~Impl() { close(); }

  void connect() {
    const auto deadline = std::chrono::steady_clock::now() + options_.connect_timeout;
    const int fd = connect_nonblocking(deadline);
    std::uint32_t max_frame = 0;
    try {
      max_frame = handshake(fd, deadline);
    } catch (...) {
      ::close(fd);
      throw;
    }
    thread_ = std::thread([this] { io_.run(); });
    install(fd, max_frame);
  }

  /// After the connection was lost: a new connection for later calls (SPEC §3), never re-sending
  /// anything of the old one. Attempts are spaced by a backoff that doubles from 50 ms to 2 s
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
      backoff_ = std::min(backoff_ * 2, std::chrono::milliseconds(2000));
      next_attempt_ = std::chrono::steady_clock::now() + backoff_;
      throw;
    }
    install(fd, max_frame);
  }

  /// The generation of the connection: it changes at every reconnect (on the I/O thread).
  /// Handlers of a socket compare it with the one they started under.
  std::uint64_t generation() const {
    std::lock_guard lk(mu_);
    return generation_;
  }

  /// Encodes a request into the outbox and registers its completion. `encode(out, id)` appends
  /// exactly one frame.
  template <typename Encode>
  void submit(Encode&& encode, Completion completion) {
    std::unique_lock lk(mu_);
    if (state_ == State::kLost) {
      lk.unlock();
      reconnect();
      lk.lock();
    }
    check_open();
    const std::uint64_t id = next_id_++;
    const std::size_t before = outbox_.size();
    encode(outbox_, id);
    const std::size_t size = outbox_.size() - before;
    if (size > max_frame_) {
      outbox_.resize(before);
      throw DataError("request of " + std::to_string(size) +
                          " bytes exceeds the daemon's maximum frame size of " +
                          std::to_string(max_frame_) + " bytes (--max-frame)",
                      SQLITE_TOOBIG, SQLITE_TOOBIG);
    }
    pending_.emplace(id, std::move(completion));
    if (write_scheduled_) return;  // the I/O thread's write in flight picks this up next
    if (pending_.size() == 1) {
      send_now(lk);  // an idle connection: the lowest latency is to send from here
    } else {
      // Replies are outstanding, so more requests are likely on the way: let the I/O thread
      // gather them into one write (one wake-up of the daemon for many requests).
      write_scheduled_ = true;
      lk.unlock();
      asio::post(io_, [self = shared_from_this()] { self->do_write(); });
    }
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

  void close() {
    {
      std::lock_guard lk(mu_);
      if (state_ == State::kClosed) return;
      state_ = State::kClosed;
    }
    if (thread_.joinable()) {
      asio::post(io_, [this] {
        std::lock_guard lk(mu_);  // no send_now() in progress on this descriptor
        error_code ignored;
        socket_.shutdown(local::socket::shutdown_both, ignored);
        socket_.close(ignored);
      });
      work_.reset();
      thread_.join();
    }
    fail_all(std::make_exception_ptr(ConnectionClosedError("the client was closed")));
  }

  bool connected() const {
    std::lock_guard lk(mu_);
    return state_ == State::kOpen;
  }

  const std::string& path() const { return path_; }

 private:
  enum class State { kOpen, kLost, kClosed };

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
      if (::connect(fd, reinterpret_cast<const sockaddr*>(&addr), sizeof addr) == 0) return fd;
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
    while ((sent += server::send_nonblocking(fd, hello.data() + sent, hello.size() - sent)) <
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
      throw ProtocolError("pasyn-writerd speaks protocol version " + std::to_string(ok.version));
    }
    return ok.max_frame;
  }

  // Hands a connected descriptor to the I/O thread and waits until it reads from it.
  void install(int fd, std::uint32_t max_frame) {
    std::promise<void> installed;
    auto done = installed.get_future();
    asio::post(io_, [this, self = shared_from_this(), fd, max_frame, &installed] {
      error_code ec;
      socket_.close(ec);
      socket_.assign(local(), fd, ec);
      if (ec) {
        ::close(fd);
        installed.set_exception(std::make_exception_ptr(
            ConnectionLostError("cannot use the socket to " + path_ + ": " + ec.message())));
        return;
      }
      decoder_ = proto::FrameDecoder(std::max(max_frame, proto::kDefaultMaxFrame));
      busy_reads_ = false;
      {
        std::lock_guard lk(mu_);
        ++generation_;
        fd_ = fd;
        max_frame_ = max_frame;
        outbox_.clear();
        write_scheduled_ = false;
        backoff_ = std::chrono::milliseconds(25);
        if (state_ != State::kClosed) state_ = State::kOpen;
      }
      do_read();
      installed.set_value();
    });
    done.get();
  }

  // Sends the outbox from the calling thread (no hand-off to the I/O thread, which costs a
  // wake-up per request when idle). Whatever the socket does not take at once is left to the
  // I/O thread. The send happens under mu_, so lose() and close() cannot close the descriptor
  // underneath it. REQUIRES: mu_ held through `lk`, no write scheduled.
  void send_now(std::unique_lock<std::mutex>& lk) {
    const std::size_t sent = server::send_nonblocking(fd_, outbox_.data(), outbox_.size());
    if (sent == outbox_.size()) {
      outbox_.clear();
      return;
    }
    outbox_.erase(outbox_.begin(), outbox_.begin() + static_cast<std::ptrdiff_t>(sent));
    write_scheduled_ = true;
    lk.unlock();
    asio::post(io_, [self = shared_from_this()] { self->do_write(); });
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
    asio::async_write(socket_, asio::buffer(writing_),
                      [self = shared_from_this(), gen](error_code ec, std::size_t) {
                        if (gen != self->generation()) return;  // an old connection's write
                        if (ec) return self->lose("write failed: " + ec.message());
                        self->do_write();
                      });
  }

  void do_read() {
    auto space = decoder_.prepare(busy_reads_ ? kLargeRead : kSmallRead);
    offered_ = space.size();
    socket_.async_read_some(
        asio::buffer(space.data(), space.size()),
        [self = shared_from_this(), gen = generation()](error_code ec, std::size_t n) {
          if (gen != self->generation()) return;  // an old connection
          self->on_read(ec, n);
        });
  }

  void on_read(error_code ec, std::size_t n) {
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
      done.complete(frame);
    }
    do_read();
  }

  // I/O thread: the connection is gone; fail everything waiting, promptly.
  void lose(const std::string& why) {
    {
      std::lock_guard lk(mu_);
      if (state_ == State::kClosed) return;  // close() fails what is pending
      state_ = State::kLost;
      lost_reason_ = why;
      outbox_.clear();  // never sent on a later connection: those calls fail below
      next_attempt_ = {};
    }
    error_code ignored;
    socket_.close(ignored);
    fail_all(std::make_exception_ptr(
        ConnectionLostError("the connection to pasyn-writerd at " + path_ + " was lost (" + why +
                            "); the outcome of requests in flight is unknown")));
  }

  void fail_all(std::exception_ptr error) {
    std::unordered_map<std::uint64_t, Completion> failed;
    {
      std::lock_guard lk(mu_);
      failed.swap(pending_);
    }
    for (auto& [id, done] : failed) done.fail(error);
  }

  const std::string path_;
  const ClientOptions options_;
  asio::io_context io_{1};
  asio::executor_work_guard<asio::io_context::executor_type> work_;
  local::socket socket_{io_};
  int fd_ = -1;  // GUARDED_BY(mu_): socket_'s descriptor, for send_now()
  std::thread thread_;
  proto::FrameDecoder decoder_;        // I/O thread only (after the handshake)
  std::size_t offered_ = 0;            // I/O thread: bytes the read in flight may fill
  bool busy_reads_ = false;            // I/O thread: the last read filled what it was offered
  std::vector<std::uint8_t> writing_;  // I/O thread only: the write in flight

  mutable std::mutex mu_;
  State state_ = State::kOpen;                         // GUARDED_BY(mu_)
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
};

namespace {

// How an execute-family request is sent: inside the connection's transaction, or with an
// idempotency key (PROTOCOL.md §6), or plainly.
struct Mode {
  bool in_tx = false;
  std::string_view key;
};
constexpr Mode kPlain{};
constexpr Mode kInTx{true, {}};

Mode keyed(const WriteOptions& options) {
  if (options.idempotency_key.size() > proto::kMaxIdempotencyKey) {
    throw ProgrammingError(
        "an idempotency key is at most " + std::to_string(proto::kMaxIdempotencyKey) + " bytes",
        SQLITE_MISUSE, SQLITE_MISUSE);
  }
  return Mode{false, options.idempotency_key};
}

// Sends one request whose frame `encode(out, id)` appends; its reply completes as `kind`.
template <typename T, typename Encode>
std::future<T> send(MultiplexedClient::Impl& impl, Mode mode, Encode encode, Completion::Kind kind,
                    proto::MsgType reply = proto::MsgType::kResult) {
  std::promise<T> promise;
  auto future = promise.get_future();
  impl.submit(
      [&](std::vector<std::uint8_t>& out, std::uint64_t id) {
        const std::size_t start = out.size();
        encode(out, id);
        if (mode.in_tx) out[start + proto::kLengthFieldSize] |= proto::kInTransaction;
        if (!mode.key.empty()) proto::add_idempotency_key(out, start, mode.key);
      },
      Completion(kind, reply, std::move(promise)));
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

// PING, SHUTDOWN, BEGIN, COMMIT, ROLLBACK: an empty request answered by an empty reply.
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
  std::uint64_t generation = 0;  // the connection that began it
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
  i.wait(send_empty(i, proto::MsgType::kBegin, proto::MsgType::kOk));
  auto tx = std::make_unique<Transaction::Impl>();
  tx->client = impl_;
  tx->generation = i.generation();
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

void Transaction::abandon() noexcept {
  if (!impl_ || impl_->finished) return;
  try {
    rollback();
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
  if (client.generation() != impl_->generation) {
    // The client reconnected since: the daemon rolled this transaction back with the old
    // connection, and the new one must not be mistaken for it.
    impl_->finished = true;
    throw ConnectionLostError(
        "the connection that began this transaction was lost; the daemon rolled it back");
  }
  try {
    return client.wait(send(client));
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
  return call(
      [&](auto& c) { return send_statement(c, kInTx, proto::MsgType::kExecute, sql, params); });
}

std::int64_t Transaction::execute_returning_rowid(std::string_view sql, const Params& params) {
  return call([&](auto& c) {
    return send_statement(c, kInTx, proto::MsgType::kExecuteRowid, sql, params);
  });
}

std::int64_t Transaction::execute_many(std::string_view sql,
                                       const std::vector<Params>& params_batch) {
  return call([&](auto& c) { return send_many(c, kInTx, sql, params_batch); });
}

void Transaction::executescript(std::string_view sql) {
  call([&](auto& c) { return send_script(c, kInTx, sql); });
}

std::vector<Row> Transaction::execute_fetchall(std::string_view sql, const Params& params) {
  return call([&](auto& c) { return send_fetch(c, kInTx, sql, params); });
}

std::optional<Row> Transaction::execute_fetchone(std::string_view sql, const Params& params) {
  return first_row(execute_fetchall(sql, params));
}

void Transaction::commit() {
  call([&](auto& c) {
    impl_->finished = true;  // whatever the outcome, the daemon ends the transaction
    return send_empty(c, proto::MsgType::kCommit, proto::MsgType::kOk);
  });
}

void Transaction::rollback() {
  call([&](auto& c) {
    impl_->finished = true;
    return send_empty(c, proto::MsgType::kRollback, proto::MsgType::kOk);
  });
}

// ---- Named parameters (PROTOCOL.md §4.1) -----------------------------------------------------

namespace {

std::future<std::int64_t> send_statement_named(MultiplexedClient::Impl& impl, Mode mode,
                                               proto::MsgType type, std::string_view sql,
                                               const NamedParams& params) {
  return send<std::int64_t>(
      impl, mode,
      [&](std::vector<std::uint8_t>& out, std::uint64_t id) {
        proto::encode_statement_named(out, type, id, sql, params);
      },
      type == proto::MsgType::kExecuteRowid ? Completion::Kind::kRowid
                                            : Completion::Kind::kChanges);
}

std::future<std::vector<Row>> send_fetch_named(MultiplexedClient::Impl& impl, Mode mode,
                                               std::string_view sql, const NamedParams& params) {
  return send<std::vector<Row>>(
      impl, mode,
      [&](std::vector<std::uint8_t>& out, std::uint64_t id) {
        proto::encode_statement_named(out, proto::MsgType::kExecuteFetch, id, sql, params);
      },
      Completion::Kind::kRows);
}

std::future<std::int64_t> send_many_named(MultiplexedClient::Impl& impl, Mode mode,
                                          std::string_view sql,
                                          const std::vector<NamedParams>& rows) {
  return send<std::int64_t>(
      impl, mode,
      [&](std::vector<std::uint8_t>& out, std::uint64_t id) {
        proto::encode_many_named(out, id, sql, rows);
      },
      Completion::Kind::kChanges);
}

}  // namespace

std::future<std::int64_t> MultiplexedClient::execute_named_async(std::string_view sql,
                                                                 const NamedParams& params) {
  return send_statement_named(impl(), kPlain, proto::MsgType::kExecute, sql, params);
}
std::future<std::int64_t> MultiplexedClient::execute_returning_rowid_named_async(
    std::string_view sql, const NamedParams& params) {
  return send_statement_named(impl(), kPlain, proto::MsgType::kExecuteRowid, sql, params);
}
std::future<std::vector<Row>> MultiplexedClient::execute_fetchall_named_async(
    std::string_view sql, const NamedParams& params) {
  return send_fetch_named(impl(), kPlain, sql, params);
}
std::int64_t MultiplexedClient::execute_named(std::string_view sql, const NamedParams& params) {
  return impl().wait(execute_named_async(sql, params));
}
std::int64_t MultiplexedClient::execute_returning_rowid_named(std::string_view sql,
                                                              const NamedParams& params) {
  return impl().wait(execute_returning_rowid_named_async(sql, params));
}
std::int64_t MultiplexedClient::execute_many_named(std::string_view sql,
                                                   const std::vector<NamedParams>& params_batch) {
  return impl().wait(send_many_named(impl(), kPlain, sql, params_batch));
}
std::vector<Row> MultiplexedClient::execute_fetchall_named(std::string_view sql,
                                                           const NamedParams& params) {
  return impl().wait(execute_fetchall_named_async(sql, params));
}
std::optional<Row> MultiplexedClient::execute_fetchone_named(std::string_view sql,
                                                             const NamedParams& params) {
  return first_row(execute_fetchall_named(sql, params));
}

std::int64_t Transaction::execute_named(std::string_view sql, const NamedParams& params) {
  return call([&](auto& c) {
    return send_statement_named(c, kInTx, proto::MsgType::kExecute, sql, params);
  });
}
std::int64_t Transaction::execute_returning_rowid_named(std::string_view sql,
                                                        const NamedParams& params) {
  return call([&](auto& c) {
    return send_statement_named(c, kInTx, proto::MsgType::kExecuteRowid, sql, params);
  });
}
std::int64_t Transaction::execute_many_named(std::string_view sql,
                                             const std::vector<NamedParams>& params_batch) {
  return call([&](auto& c) { return send_many_named(c, kInTx, sql, params_batch); });
}
std::vector<Row> Transaction::execute_fetchall_named(std::string_view sql,
                                                     const NamedParams& params) {
  return call([&](auto& c) { return send_fetch_named(c, kInTx, sql, params); });
}
std::optional<Row> Transaction::execute_fetchone_named(std::string_view sql,
                                                       const NamedParams& params) {
  return first_row(execute_fetchall_named(sql, params));
}

}  // namespace pasyn
