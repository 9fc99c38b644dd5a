// Asio side of the server: acceptor, sessions, shutdown; the writer thread lives in writer.cpp.
//
// Threading model
// ---------------
// * The I/O thread is the one that calls Server::run(). It alone runs the io_context, which owns
//   the acceptor, every Session (socket reads, frame parsing, the writes the writer thread could
//   not make), the timers and the signal set.
// * The writer thread (Writer) alone owns the read-write sqlite3*. Requests cross from the I/O
//   thread to the writer through Writer::submit (a mutex-guarded queue, one lock per socket
//   read, not per request; the writer is woken only when it sleeps, and while it waits to fill
//   a batch only once the requests it expects are there). Replies do not cross back: the writer
//   thread calls ReplySink::deliver (Session::send) with the encoded frames of one batch for one
//   connection and sends them itself, non-blocking, on the socket's descriptor when no
//   async_write of that connection is in flight; only the rest (the socket was full) is handed
//   to the I/O thread's single async_write, behind which later frames queue. out_mu_ guards
//   that choice, the output queue and the descriptor (close_now closes it under out_mu_), so a
//   direct send never races an async_write or a close. The rest of Session (but its atomic
//   counters and flags) is the I/O thread's.
// * request_stop() may come from any thread (a handle, a signal, the writer after SHUTDOWN): it
//   posts to the io_context. Shutdown order: stop accepting and refuse new requests, let the
//   writer drain its queue and checkpoint, flush every session's replies, remove the socket.
// Size: ~1,000 lines, over the ~600 guideline. Session (with access control) moves to its own
// files in issue 11's rework of this path (the reviews' split: session, access control, server).
#include "server.hpp"

#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <boost/asio/io_context.hpp>
#include <boost/asio/local/stream_protocol.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/signal_set.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/write.hpp>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <mutex>
#include <optional>
#include <span>
#include <unordered_map>
#include <utility>

#include <pasyn/proto/socket_send.hpp>

#include "access_control.hpp"
#include "admission.hpp"
#include "log.hpp"
#include "paths.hpp"
#include "writer.hpp"

namespace pasyn::server {
namespace {

namespace asio = boost::asio;
using boost::system::error_code;
using local = asio::local::stream_protocol;

// Reads offer 4 KiB, or 64 KiB right after a read that filled what it was offered (a busy
// connection); a frame in progress always gets room for all of it.
constexpr std::size_t kSmallRead = 4096;
constexpr std::size_t kLargeRead = 64 * 1024;
constexpr auto kFlushGrace = std::chrono::seconds(5);

}  // namespace

class Session;

class Server::Impl {
 public:
  explicit Impl(Config config);
  void run();
  void request_stop();
  void on_session_closed(std::uint64_t id);
  void wake_sessions();
  void shed_unread_replies();

  Config config_;
  /// Queued request and unsent reply bytes of every connection (--max-total-bytes). Declared
  /// before the writer, whose queued requests return their bytes here when destroyed.
  MemoryBudget budget_{config_.max_total_bytes,
                       [this] { asio::post(io_, [this] { wake_sessions(); }); },
                       [this] { asio::post(io_, [this] { shed_unread_replies(); }); }};
  std::optional<LockFile> lock_;  // held from construction until run() has stopped
  Writer writer_;
  asio::io_context io_{1};
  local::acceptor acceptor_{io_};
  asio::steady_timer accept_timer_{io_};  // the back-off after a failed accept (EMFILE, ...)
  std::optional<asio::signal_set> signals_;
  asio::steady_timer drain_timer_{io_};
  asio::steady_timer status_timer_{io_};
  asio::steady_timer watchdog_timer_{io_};
  const Clock::time_point started_ = Clock::now();
  std::string last_status_;
  bool socket_passed_ = false;  // the socket came from the service manager: not ours to unlink
  std::unordered_map<std::uint64_t, std::weak_ptr<Session>> sessions_;
  std::uint64_t next_session_id_ = 1;
  bool stopping_ = false;
  struct stat socket_stat_ {};

  /// At most `burst` warnings per second for one kind of event, so that a local client sending
  /// malformed frames in a loop cannot flood the log; how many were left out is logged with the
  /// next one admitted. I/O thread only.
  class LogLimiter {
   public:
    explicit LogLimiter(const char* what, int burst = 10) : what_(what), burst_(burst) {}
    bool admit(Clock::time_point now) {
      if (now - window_ >= std::chrono::seconds(1)) {
        if (suppressed_ > 0) {
          log().warn("{} more {} in the last second were not logged", suppressed_, what_);
        }
        window_ = now;
        in_window_ = suppressed_ = 0;
      }
      if (in_window_ < burst_) {
        ++in_window_;
        return true;
      }
      ++suppressed_;
      return false;
    }

   private:
    const char* what_;
    int burst_;
    Clock::time_point window_{};
    int in_window_ = 0;
    std::uint64_t suppressed_ = 0;
  };
  LogLimiter protocol_errors_{"protocol errors"};
  LogLimiter refusals_{"refused connections"};
  LogLimiter accept_errors_{"accept errors", 1};

  /// STATS: the server's and the writer's figures (PROTOCOL.md §5).
  proto::Report stats() const;

 private:
  void notify(const std::string& state) const {
    if (config_.notify) config_.notify(state);
  }
  std::string status_line() const;
  void refresh_status();
  void watchdog_tick();
  void do_accept();
  void begin_stop(const char* why);
  void on_writer_drained();
  void remove_socket();
};

/// One client connection. Lives on the I/O thread; kept alive by its pending handlers and by
/// the requests it has in the writer's queue.
class Session : public ReplySink, public ByteAccount, public std::enable_shared_from_this<Session> {
 public:
  Session(Server::Impl& server, local::socket socket, std::uint64_t id)
      : server_(server),
        socket_(std::move(socket)),
        handshake_timer_(server.io_),
        // Before HELLO_OK only a frame of HELLO's size is read (PROTOCOL.md §2).
        decoder_(std::min(server.config_.max_frame, proto::kMaxHandshakeFrame)),
        id_(id) {}

  /// The peer was admitted at accept (admission.hpp).
  void start() {
    describe_peer();
    log().info("connection {} opened{}", id_, peer_);
    check_access();
    handshake_timer_.expires_after(server_.config_.handshake_timeout);
    handshake_timer_.async_wait([self = shared_from_this()](error_code ec) {
      if (!ec && !self->hello_done_) self->protocol_error("no HELLO within the handshake timeout");
    });
    do_read();
  }

  // Writer thread: the replies of `replies` requests of this connection.
  void deliver(std::vector<std::uint8_t> frames, std::size_t replies) override {
    send(std::move(frames));
    inflight_.fetch_sub(replies);
    wake();
  }

  // Any thread: a queued request was dropped (ByteCharge) or replies were written.
  void release_bytes(std::size_t n) noexcept override {
    queued_bytes_.fetch_sub(n);
    server_.budget_.release(n, false);
    wake();
  }

  // Any thread: resumes reading (on the I/O thread) if it was paused for a limit that may now
  // have room; pump() checks again.
  void wake() {
    if (read_paused_.load() && !wake_posted_.exchange(true)) {
      asio::post(server_.io_, [self = shared_from_this()] {
        self->wake_posted_.store(false);
        self->resume_reading();
      });
    }
  }

  // Reply bytes waiting to be written to this client (the write in flight included).
  std::size_t unsent_bytes() {
    std::lock_guard lk(out_mu_);
    return unsent_;
  }

  // I/O thread: disconnects this client, the largest holder of unread replies while
  // --max-total-bytes is reached (its transaction is rolled back by close_now).
  void shed(std::size_t unsent) {
    log().warn(
        "connection {}{} does not read its replies and holds the most of them ({} bytes) while "
        "--max-total-bytes ({}) is reached; disconnecting it",
        id_, peer_, unsent, server_.config_.max_total_bytes);
    close_now();
  }

  void close_after_flush() {
    closing_ = true;
    {
      std::lock_guard lk(out_mu_);
      if (writing_) {  // do_write() closes once the output is flushed
        error_code ignored;
        socket_.shutdown(local::socket::shutdown_receive, ignored);
        handshake_timer_.expires_after(kFlushGrace);  // reuse the timer to bound the flush
        handshake_timer_.async_wait([self = shared_from_this()](error_code ec) {
          if (!ec) self->close_now();
        });
        return;
      }
    }
    close_now();
  }

  bool alive() const noexcept override { return alive_.load(std::memory_order_acquire); }

  // Writer thread: close without answering what the writer still owes (outcome unknown).
  void abandon() noexcept override {
    try {
      asio::post(server_.io_, [self = shared_from_this()] { self->close_after_flush(); });
    } catch (const std::exception& e) {
      log().error("cannot close connection {}: {}", id_, e.what());
    }
  }

  void close_now() {
    if (closed_) return;
    closed_ = true;
    alive_.store(false, std::memory_order_release);
    if (hello_done_) {
      // Lets the writer roll back this connection's transaction at once (PROTOCOL.md §6.2).
      std::vector<Request> notice(1);
      notice[0].disconnect = true;
      notice[0].sink = shared_from_this();
      server_.writer_.submit(notice);
    }
    error_code ignored;
    handshake_timer_.cancel();
    {
      std::lock_guard lk(out_mu_);  // no send() in progress on the descriptor we close
      drop_output_locked();
      socket_.shutdown(local::socket::shutdown_both, ignored);
      socket_.close(ignored);
    }
    log().info("connection {} closed", id_);
    server_.on_session_closed(id_);
  }

 private:
  void describe_peer() {
    socklen_t len = sizeof cred_;
    if (::getsockopt(socket_.native_handle(), SOL_SOCKET, SO_PEERCRED, &cred_, &len) == 0) {
      peer_ = describe(cred_);
    } else {
      cred_.uid = static_cast<uid_t>(-1);
      cred_.gid = static_cast<gid_t>(-1);
    }
  }

  // The peer's role from its credentials (access_control.hpp). Whether it may connect at all
  // was decided at accept (admission.cpp), with the same rules.
  void check_access() {
    role_ = assess_peer(server_.config_, cred_.uid, cred_.gid).role;
    if (role_ == Role::kReadOnly) {
      log().info("connection {}{} may only read (--read-only-uid/--read-only-gid)", id_, peer_);
    } else if (role_ == Role::kAdmin) {
      log().debug("connection {}{} is an admin (SHUTDOWN, CHECKPOINT, BACKUP)", id_, peer_);
    }
  }

  void resume_reading() {
    if (!read_paused_.load() || closing_ || closed_) return;
    read_paused_.store(false);
    pump();
  }

  // A limit that stops reading: unanswered requests (--max-inflight), this connection's bytes
  // (--max-queued-bytes) or everyone's (--max-total-bytes).
  bool reading_blocked(std::size_t parsed = 0) const {
    const auto& c = server_.config_;
    return inflight_.load() + parsed >= c.max_inflight ||
           queued_bytes_.load() >= c.max_queued_bytes || server_.budget_.full();
  }

  ByteCharge charge(std::size_t n) {
    queued_bytes_.fetch_add(n);
    server_.budget_.add(n, false);
    return ByteCharge(shared_from_this(), n);
  }

  void do_read() {
    if (closing_ || closed_) return;
    auto space = decoder_.prepare(busy_reads_ ? kLargeRead : kSmallRead);
    offered_ = space.size();
    socket_.async_read_some(
        asio::buffer(space.data(), space.size()),
        [self = shared_from_this()](error_code ec, std::size_t n) { self->on_read(ec, n); });
  }

  void on_read(error_code ec, std::size_t n) {
    if (closed_) return;
    if (ec) {
      if (closing_) return;  // we shut the receive side ourselves; writes finish the close
      if (ec != asio::error::eof && ec != asio::error::connection_reset) {
        log().warn("connection {}: read failed: {}", id_, ec.message());
      }
      close_now();
      return;
    }
    decoder_.commit(n);
    busy_reads_ = n == offered_;
    pump();
  }

  // Takes the complete frames received, up to the in-flight and byte limits, hands the
  // requests to the writer, and reads on, or pauses reading (backpressure) until replies and
  // answered requests bring this connection under --max-inflight and --max-queued-bytes, and
  // the daemon under --max-total-bytes, again; unparsed bytes wait in the decoder.
  void pump() {
    // Parses again when the limit lifted between the pause and its re-check: the frames still
    // in the decoder would otherwise wait for bytes that may never come.
    while (pump_once()) {
    }
  }

  // One round of pump(): true if it must run again at once.
  bool pump_once() {
    std::vector<Request> requests;
    proto::FrameView frame;
    while (!reading_blocked(requests.size())) {
      const auto status = decoder_.next(frame);
      if (status == proto::FrameDecoder::Status::kNeedMore) break;
      if (status == proto::FrameDecoder::Status::kError) {
        protocol_error(hello_done_ ? decoder_.error()
                                   : "before the handshake: " + decoder_.error());
        break;
      }
      const std::size_t before = requests.size();
      const bool go_on = handle_frame(frame, requests);
      // Counted from now until the writer has answered and dropped the request.
      if (requests.size() > before) {
        requests.back().charge = charge(proto::kHeaderSize + frame.payload.size());
      }
      if (!go_on) break;
    }
    if (!requests.empty()) {
      // Counted before the writer can answer them, so that the count never goes negative.
      inflight_.fetch_add(requests.size(), std::memory_order_acq_rel);
      if (!server_.writer_.submit(requests)) {
        inflight_.fetch_sub(requests.size(), std::memory_order_acq_rel);
        refuse(requests);
      }
    }
    if (closing_ || closed_) return false;
    if (reading_blocked()) {
      // Paused first, then checked again: a release from now on sees the flag and wakes us.
      read_paused_.store(true);
      if (server_.budget_.full()) server_.budget_.wait_for_room();
      if (reading_blocked()) return false;
      read_paused_.store(false);
      return true;  // room again: parse what the decoder holds before reading more
    }
    do_read();
    return false;
  }

  // Returns false after a protocol error (the session is then closing).
  bool handle_frame(const proto::FrameView& f, std::vector<Request>& out) {
    using proto::MsgType;
    std::string why;
    const auto type = static_cast<MsgType>(f.type);
    if (!hello_done_) {
      proto::Hello hello;
      if (type != MsgType::kHello) {
        return protocol_error("the first frame must be HELLO, got type " + hex(f.type));
      }
      if (!proto::decode_hello(f.payload, hello, why)) return protocol_error("bad HELLO: " + why);
      if (hello.magic != proto::kMagic) return protocol_error("bad magic in HELLO");
      if (hello.version != proto::kVersion) {
        return protocol_error("unsupported protocol version " + std::to_string(hello.version) +
                              " (this server speaks " + std::to_string(proto::kVersion) + ")");
      }
      hello_done_ = true;
      decoder_.set_max_frame(server_.config_.max_frame);
      handshake_timer_.cancel();
      std::vector<std::uint8_t> reply;
      // The daemon announces every capability it supports (PROTOCOL.md §3), whatever the
      // client asked for.
      proto::encode_hello_ok(reply, {proto::kVersion, proto::kServerCapabilities,
                                     server_.config_.max_frame, "pasyn-writerd " PASYN_VERSION});
      send(std::move(reply));
      return true;
    }
    Request r;
    r.type = static_cast<MsgType>(proto::base_type(f.type));
    r.in_tx = proto::in_transaction(f.type);
    r.id = f.request_id;
    r.uid = static_cast<std::uint32_t>(cred_.uid);
    bool ok = false;
    // The execute family keeps one copy of the payload and reads SQL and values in place; an
    // idempotency key comes first (PROTOCOL.md §6.3).
    std::span<const std::uint8_t> body;
    if (r.type >= MsgType::kExecute && r.type <= MsgType::kExecuteScript) {
      r.payload.assign(f.payload.begin(), f.payload.end());
      body = r.payload;
      if (proto::has_idempotency_key(f.type)) {
        proto::PayloadReader reader(body);
        if (!reader.string(r.key) || r.key.empty() || r.key.size() > proto::kMaxIdempotencyKey) {
          return protocol_error(std::string("bad idempotency key in ") + proto::to_string(r.type) +
                                " (1 to " + std::to_string(proto::kMaxIdempotencyKey) +
                                " bytes expected)");
        }
        body = body.subspan(body.size() - reader.remaining());
      }
      if (r.in_tx) {  // the transaction number comes first (PROTOCOL.md §6.2)
        proto::PayloadReader reader(body);
        if (!reader.u64(r.transaction)) {
          return protocol_error(std::string("no transaction number in ") +
                                proto::to_string(r.type));
        }
        body = body.subspan(body.size() - reader.remaining());
      }
    }
    switch (r.type) {
      case MsgType::kPing: {
        if (!(ok = proto::decode_empty(f.payload, why))) break;
        std::vector<std::uint8_t> reply;
        proto::encode_empty(reply, MsgType::kPong, f.request_id);
        send(std::move(reply));
        return true;
      }
      case MsgType::kExecute:
      case MsgType::kExecuteRowid:
      case MsgType::kExecuteFetch: {
        proto::StatementView v;
        if ((ok = proto::decode_statement_view(body, v, why, proto::has_named_params(f.type)))) {
          r.sql = v.sql;
          r.params = v.params;
        }
        break;
      }
      case MsgType::kExecuteMany: {
        if ((ok = proto::decode_many_view(body, r.many, why, proto::has_named_params(f.type)))) {
          r.sql = r.many.sql;
        }
        break;
      }
      case MsgType::kExecuteScript: {
        proto::PayloadReader reader(body);
        ok = reader.string(r.sql) && reader.finish();
        if (!ok) why = reader.error();
        break;
      }
      case MsgType::kStats: {
        // Answered here, on the I/O thread: figures stay available while the writer is busy.
        if (!(ok = proto::decode_empty(f.payload, why))) break;
        std::vector<std::uint8_t> reply;
        auto report = server_.stats();
        if (role_ == Role::kReadOnly) {
          // Where the database and the socket live, and the daemon's pid, are for the users the
          // daemon writes for (SECURITY.md); a read-only peer gets the figures.
          std::erase_if(report, [](const auto& figure) {
            return figure.first == "database" || figure.first == "socket" || figure.first == "pid";
          });
        }
        proto::encode_report(reply, f.request_id, report);
        send(std::move(reply));
        return true;
      }
      case MsgType::kCheckpoint:
      case MsgType::kBackup: {
        r.payload.assign(f.payload.begin(), f.payload.end());
        proto::PayloadReader reader(r.payload);
        ok = reader.string(r.sql) && reader.finish();
        if (!ok) why = reader.error();
        break;
      }
      case MsgType::kShutdown:
        ok = proto::decode_empty(f.payload, why);
        if (ok) log().info("connection {} asked the server to shut down", id_);
        break;
      case MsgType::kBegin:
        ok = proto::decode_empty(f.payload, why);
        break;
      case MsgType::kCommit:
      case MsgType::kRollback:
        ok = proto::decode_transaction_end(f.payload, r.transaction, why);
        break;
      case MsgType::kHello:
        return protocol_error("HELLO sent twice");
      default:
        return protocol_error("unknown message type " + hex(f.type));
    }
    if (!ok) return protocol_error(std::string("bad ") + proto::to_string(r.type) + ": " + why);
    auto refusal = refuse_by_role(r);
    if (!refusal) refusal = refuse_over_limits(r);
    if (refusal) {  // answered here; the connection goes on
      std::vector<std::uint8_t> reply;
      proto::encode_pasyn_error(reply, r.id, refusal->first, refusal->second);
      send(std::move(reply));
      return true;
    }
    r.sink = shared_from_this();
    out.push_back(std::move(r));
    return true;
  }

  // What the connection's role allows: an error to answer a well-formed request with, if any.
  // Also marks the request with the role, for the writer's own checks.
  std::optional<std::pair<proto::PasynCode, std::string>> refuse_by_role(Request& r) const {
    using proto::MsgType;
    r.role = role_;  // the writer's authorizer and admin checks use it
    if (role_ == Role::kReadOnly) {
      if ((r.type != MsgType::kExecute && r.type != MsgType::kExecuteFetch) || r.in_tx) {
        return std::pair{proto::PasynCode::kPermission,
                         std::string("this connection may only read (--read-only-uid/gid): ") +
                             proto::to_string(r.type) + " refused"};
      }
      if (!r.key.empty()) {  // recording the key would write the database
        return std::pair{proto::PasynCode::kPermission,
                         std::string("this connection may only read (--read-only-uid/gid): an "
                                     "idempotency key is recorded in the database, refused")};
      }
    }
    if (auto refusal = refuse_admin_request(r.type, role_ == Role::kAdmin)) {
      log().debug("connection {}{}: {} refused: not an admin", id_, peer_,
                  proto::to_string(r.type));
      return std::pair{proto::PasynCode::kPermission, std::move(*refusal)};
    }
    return std::nullopt;
  }

  // The size limits of a well-formed request: an error to answer it with, if any.
  std::optional<std::pair<proto::PasynCode, std::string>> refuse_over_limits(
      const Request& r) const {
    const auto& c = server_.config_;
    if (r.sql.find('\0') != std::string_view::npos) {  // SQLite would stop reading there
      return std::pair{proto::PasynCode::kMisuse, std::string("the SQL text contains a NUL byte")};
    }
    if (r.sql.size() > c.max_sql_length) {
      return std::pair{proto::PasynCode::kTooLarge, "the SQL text is " +
                                                        std::to_string(r.sql.size()) +
                                                        " bytes, more than --max-sql-length " +
                                                        std::to_string(c.max_sql_length)};
    }
    if (r.params.count > c.max_params) {
      return std::pair{proto::PasynCode::kTooLarge, std::to_string(r.params.count) +
                                                        " parameters, more than --max-params " +
                                                        std::to_string(c.max_params)};
    }
    return std::nullopt;
  }

  void refuse(std::vector<Request>& requests) {
    std::vector<std::uint8_t> replies;
    for (const auto& r : requests) {
      proto::encode_pasyn_error(replies, r.id, proto::PasynCode::kShuttingDown,
                                "pasyn-writerd is shutting down; the request was not executed");
    }
    send(std::move(replies));
  }

  bool protocol_error(const std::string& why) {
    if (closing_ || closed_) return false;
    if (server_.protocol_errors_.admit(Clock::now())) {
      log().warn("connection {}{}: protocol error: {}; closing it", id_, peer_, why);
    }
    std::vector<std::uint8_t> reply;
    proto::encode_pasyn_error(reply, 0, proto::PasynCode::kProtocol, why);
    send(std::move(reply));
    close_after_flush();
    return false;
  }

  // Any thread: sends the frames now, from this thread, if no write is in flight and the
  // socket takes them; whatever remains goes to the I/O thread's single async_write, behind
  // which later frames queue up and are written together.
  void send(std::vector<std::uint8_t> frames) {
    if (frames.empty()) return;
    std::unique_lock lk(out_mu_);
    if (out_closed_) return;
    if (writing_) {
      if (pending_.size() + frames.size() > server_.config_.max_output) {
        // The client stopped reading its replies: drop them and disconnect it (its transaction
        // is rolled back by close_now), rather than buffer without bound.
        const std::size_t dropped = pending_.size() + frames.size();
        drop_output_locked();
        lk.unlock();
        log().warn(
            "connection {}{} does not read its replies ({} bytes waiting, more than "
            "--max-output); disconnecting it",
            id_, peer_, dropped);
        asio::post(server_.io_, [self = shared_from_this()] { self->close_now(); });
        return;
      }
      pending_.insert(pending_.end(), frames.begin(), frames.end());
      add_unsent_locked(frames.size());
      return;
    }
    const std::size_t sent =
        proto::send_nonblocking(socket_.native_handle(), frames.data(), frames.size());
    if (sent == frames.size()) return;
    pending_.assign(frames.begin() + static_cast<std::ptrdiff_t>(sent), frames.end());
    add_unsent_locked(pending_.size());
    writing_ = true;
    lk.unlock();
    asio::post(server_.io_, [self = shared_from_this()] { self->do_write(); });
  }

  // I/O thread: writes what is pending, or ends the write phase (and a pending close).
  void do_write() {
    {
      std::lock_guard lk(out_mu_);
      if (!pending_.empty() && !out_closed_) {
        writing_buf_.clear();
        writing_buf_.swap(pending_);
      } else {
        writing_ = false;
        writing_buf_.clear();
      }
    }
    if (writing_buf_.empty()) {
      if (closing_) close_now();
      return;
    }
    asio::async_write(socket_, asio::buffer(writing_buf_),
                      [self = shared_from_this()](error_code ec, std::size_t written) {
                        if (ec && !self->closed_) {
                          log().info("connection {}: write failed: {}", self->id_, ec.message());
                          self->close_now();
                        }
                        if (ec) return;
                        {
                          std::lock_guard lk(self->out_mu_);
                          if (!self->out_closed_) self->release_unsent_locked(written);
                        }
                        self->do_write();
                      });
  }

  // out_mu_ held: reply bytes now waiting in pending_ (or in the write in flight).
  void add_unsent_locked(std::size_t n) {
    unsent_ += n;
    queued_bytes_.fetch_add(n);
    server_.budget_.add(n, true);
  }

  // out_mu_ held: reply bytes written, or dropped.
  void release_unsent_locked(std::size_t n) {
    unsent_ -= n;
    queued_bytes_.fetch_sub(n);
    server_.budget_.release(n, true);
    wake();
  }

  // out_mu_ held: no more output; what was waiting (the write in flight too, which the close
  // cancels) leaves the budgets.
  void drop_output_locked() {
    out_closed_ = true;
    pending_.clear();
    if (unsent_ > 0) release_unsent_locked(unsent_);
  }

  static std::string hex(std::uint8_t v) {
    char buf[8];
    std::snprintf(buf, sizeof buf, "0x%02x", v);
    return buf;
  }

  Server::Impl& server_;
  local::socket socket_;
  asio::steady_timer handshake_timer_;
  proto::FrameDecoder decoder_;
  std::size_t offered_ = 0;  // bytes the read in flight may fill
  bool busy_reads_ = false;  // the last read filled what it was offered
  std::uint64_t id_;
  std::string peer_;
  std::atomic<bool> alive_{true};
  ucred cred_{};                          // the peer's pid, uid and gid (SO_PEERCRED)
  Role role_ = Role::kWriter;             // set by check_access() when the session starts
  std::atomic<std::size_t> inflight_{0};  // requests handed to the writer, not yet answered
  /// Request payloads not yet answered and unsent reply bytes (--max-queued-bytes).
  std::atomic<std::size_t> queued_bytes_{0};
  std::atomic<bool> read_paused_{false};  // backpressure: no read until reading_blocked() ends
  std::atomic<bool> wake_posted_{false};  // a resume_reading() is posted
  bool hello_done_ = false;
  bool closing_ = false;  // no more reads; close once the replies are written
  bool closed_ = false;
  std::vector<std::uint8_t> writing_buf_;  // I/O thread: frames of the async_write in flight

  std::mutex out_mu_;        // the output state below, and the descriptor while a send() uses it
  bool writing_ = false;     // GUARDED_BY(out_mu_): an async_write is in flight
  bool out_closed_ = false;  // GUARDED_BY(out_mu_)
  std::vector<std::uint8_t> pending_;  // GUARDED_BY(out_mu_): frames for the next write
  std::size_t unsent_ = 0;  // GUARDED_BY(out_mu_): bytes of pending_ and of the write in flight
};

namespace {

// The database path made absolute, so that STATS (and the `pasyn query` that opens the file
// from another working directory) can use it.
Config with_absolute_database(Config config) {
  std::error_code ec;
  auto path = std::filesystem::absolute(config.database_path, ec);
  if (!ec) config.database_path = path.lexically_normal().string();
  return config;
}

}  // namespace

Server::Impl::Impl(Config config)
    : config_(with_absolute_database(std::move(config))),
      lock_(std::in_place, config_.database_path),
      writer_(config_) {
  // Catch SIGTERM before anyone can connect, so a stop never leaves the socket behind.
  if (config_.handle_signals) signals_.emplace(io_, SIGTERM, SIGINT);
  error_code ec;
  if (config_.listen_fd >= 0) {  // socket activation: systemd bound and listens already
    const int fd = std::exchange(config_.listen_fd, -1);
    acceptor_.assign(local(), fd, ec);
    if (ec) {
      ::close(fd);
      throw StartError(StartError::Kind::kSocket,
                       "cannot use the socket systemd passed: " + ec.message());
    }
    config_.socket_path = acceptor_.local_endpoint(ec).path();
    socket_passed_ = true;
    return;
  }
  if (config_.socket_path.empty()) config_.socket_path = default_socket_path(config_.database_path);
  free_socket_path(config_.socket_path);
  const local::endpoint endpoint(config_.socket_path);
  // SPEC §4: 0660 by default, so clients of the daemon's user or the socket's group connect.
  // Nobody may connect before the file has its group and mode: Linux creates the socket file
  // with the socket's own inode mode (less the umask), so that mode is set before bind(), and
  // listen() comes only after chown/chmod (a connect before listen() is refused).
  acceptor_.open(endpoint.protocol(), ec);
  if (!ec && ::fchmod(acceptor_.native_handle(), static_cast<mode_t>(config_.socket_mode)) != 0) {
    ec.assign(errno, boost::system::system_category());
  }
  if (!ec) acceptor_.bind(endpoint, ec);
  if (ec) {
    throw StartError(StartError::Kind::kSocket,
                     "cannot listen on " + config_.socket_path + ": " + ec.message());
  }
  const auto give_up = [&](const std::string& what) {
    const std::string why = std::strerror(errno);
    ::unlink(config_.socket_path.c_str());
    throw StartError(StartError::Kind::kSocket, "cannot " + what + ": " + why);
  };
  if (config_.socket_gid >= 0 && ::chown(config_.socket_path.c_str(), static_cast<uid_t>(-1),
                                         static_cast<gid_t>(config_.socket_gid)) != 0) {
    give_up("give " + config_.socket_path + " to group " + std::to_string(config_.socket_gid));
  }
  if (::chmod(config_.socket_path.c_str(), static_cast<mode_t>(config_.socket_mode)) != 0) {
    give_up("set the mode of " + config_.socket_path);
  }
  acceptor_.listen(asio::socket_base::max_listen_connections, ec);
  if (ec) {
    ::unlink(config_.socket_path.c_str());
    throw StartError(StartError::Kind::kSocket,
                     "cannot listen on " + config_.socket_path + ": " + ec.message());
  }
  ::lstat(config_.socket_path.c_str(), &socket_stat_);
}

void Server::Impl::run() {
  writer_.start([this] { request_stop(); },
                [this] { asio::post(io_, [this] { on_writer_drained(); }); });
  log().info("serving {} on {} (synchronous={})", config_.database_path, config_.socket_path,
             config_.synchronous_full ? "full" : "normal");
  do_accept();
  if (config_.notify) {
    // The database is open, the writer runs and the acceptor is live: clients may come.
    last_status_ = status_line();
    notify("READY=1\nSTATUS=" + last_status_);
    refresh_status();
    if (config_.watchdog_interval.count() > 0) {
      notify("WATCHDOG=1");
      writer_.made_progress();  // the baseline for the first tick
      watchdog_tick();
    }
  }
  if (signals_) {
    signals_->async_wait([this](error_code ec, int signo) {
      if (!ec) begin_stop(signo == SIGTERM ? "SIGTERM" : "SIGINT");
    });
  }
  for (;;) {
    try {
      io_.run();
      break;
    } catch (const std::exception& e) {  // a bug, not input: keep serving the others
      log().error("unexpected exception in an I/O handler: {}", e.what());
    }
  }
  writer_.join();
  remove_socket();  // also when the I/O loop ran out of work before the writer drained
  lock_.reset();    // the database is closed: another server may take it now
  if (auto failure = writer_.storage_failure()) {
    throw StorageError(failure->message, failure->sqlite_code);
  }
  log().info("stopped");
}

void Server::Impl::do_accept() {
  acceptor_.async_accept([this](error_code ec, local::socket socket) {
    if (stopping_ || ec == asio::error::operation_aborted) return;
    if (ec) {
      // EMFILE, ENFILE, ENOBUFS...: the connection stays in the backlog and would be reported
      // again at once; wait a moment instead of spinning (review M5).
      if (accept_errors_.admit(Clock::now())) {
        log().error("accept failed: {}; retrying in 100 ms", ec.message());
      }
      accept_timer_.expires_after(std::chrono::milliseconds(100));
      accept_timer_.async_wait([this](error_code timer_ec) {
        if (!timer_ec && !stopping_) do_accept();
      });
      return;
    }
    // Admission before a byte is read: a refused or over-limit peer gets its ERROR frame and
    // the close, no Session, no slot (PROTOCOL.md §3).
    const Admission admission = admit(config_, socket.native_handle(), sessions_.size());
    if (!admission.admitted()) {
      if (refusals_.admit(Clock::now())) log().warn("{}", admission.log_line);
      send_refusal(socket.native_handle(), admission);
      error_code ignored;
      socket.close(ignored);
    } else {
      const auto id = next_session_id_++;
      auto session = std::make_shared<Session>(*this, std::move(socket), id);
      sessions_.emplace(id, session);
      session->start();
    }
    do_accept();
  });
}

// Bytes were released below --max-total-bytes: every connection paused for it reads again
// (each checks its own limits first).
void Server::Impl::wake_sessions() {
  for (auto& [id, weak] : sessions_) {
    if (auto s = weak.lock()) s->wake();
  }
}

// --max-total-bytes is reached. When clients that do not read their replies hold most of it,
// disconnect the largest of them (rolling back its transaction) until it is not, so that the
// others keep being served; request bytes alone only pause reading (backpressure).
void Server::Impl::shed_unread_replies() {
  budget_.rearm();
  while (budget_.full() && budget_.unsent() >= budget_.limit() / 2) {
    std::shared_ptr<Session> largest;
    std::size_t most = 0;
    for (auto& [id, weak] : sessions_) {
      auto s = weak.lock();
      if (!s) continue;
      if (const std::size_t unsent = s->unsent_bytes(); unsent > most) {
        most = unsent;
        largest = std::move(s);
      }
    }
    if (!largest) break;
    largest->shed(most);
    if (largest->unsent_bytes() != 0) break;  // not released: never loop on the same one
  }
}

void Server::Impl::request_stop() {
  asio::post(io_, [this] { begin_stop("stop requested"); });
}

void Server::Impl::begin_stop(const char* why) {
  if (stopping_) return;
  stopping_ = true;
  log().info("shutting down ({}): finishing queued work", why);
  notify(std::string("STOPPING=1\nSTATUS=shutting down (") + why + "): finishing queued work");
  error_code ignored;
  status_timer_.cancel();
  accept_timer_.cancel();
  acceptor_.close(ignored);
  if (signals_) signals_->cancel(ignored);
  writer_.stop();
  drain_timer_.expires_after(config_.drain_timeout);
  drain_timer_.async_wait([this](error_code ec) {
    if (ec) return;
    log().warn("drain timeout ({} ms) reached: interrupting the writer",
               config_.drain_timeout.count());
    writer_.abort();
  });
}

void Server::Impl::on_writer_drained() {
  drain_timer_.cancel();
  watchdog_timer_.cancel();
  remove_socket();
  // Copy: closing a session erases it from sessions_.
  std::vector<std::shared_ptr<Session>> live;
  for (auto& [id, weak] : sessions_) {
    if (auto s = weak.lock()) live.push_back(std::move(s));
  }
  for (auto& s : live) s->close_after_flush();
}

void Server::Impl::on_session_closed(std::uint64_t id) { sessions_.erase(id); }

void Server::Impl::remove_socket() {
  if (socket_passed_) return;  // systemd's socket: it stays for the next activation
  struct stat st {};
  if (::lstat(config_.socket_path.c_str(), &st) == 0 && st.st_ino == socket_stat_.st_ino &&
      st.st_dev == socket_stat_.st_dev) {
    ::unlink(config_.socket_path.c_str());
  }
}

proto::Report Server::Impl::stats() const {
  const auto w = writer_.stats();
  struct stat wal {};
  const std::int64_t wal_bytes =
      ::stat((config_.database_path + "-wal").c_str(), &wal) == 0 ? wal.st_size : 0;
  const auto i64 = [](auto v) { return static_cast<std::int64_t>(v); };
  const double mean_batch =
      w.batches ? static_cast<double>(w.batched_requests) / static_cast<double>(w.batches) : 0.0;
  proto::Report report{
      {"version", std::string(PASYN_VERSION)},
      {"pid", i64(::getpid())},
      {"database", config_.database_path},
      {"socket", config_.socket_path},
      {"synchronous", std::string(config_.synchronous_full ? "full" : "normal")},
      {"uptime_ms",
       i64(std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - started_).count())},
      {"connections", i64(sessions_.size())},
      {"requests", i64(w.requests)},
      {"batches", i64(w.batches)},
      {"mean_batch_size", mean_batch},
      {"commit_p50_us", i64(w.commit_p50_us)},
      {"commit_p99_us", i64(w.commit_p99_us)},
      {"commit_max_us", i64(w.commit_max_us)},
      {"queue_depth", i64(w.queue_depth)},
      {"waiting_for_transaction", i64(w.waiting)},
      {"transaction_age_ms", i64(w.transaction_age_ms)},
      {"wal_bytes", wal_bytes},
      {"backup_pages_done", w.backup_pages_done},
      {"backup_pages_total", w.backup_pages_total},
  };
  report.emplace_back("batch_waits", i64(w.batch_waits));
  report.emplace_back("batch_bytes_max", i64(w.batch_bytes_max));
  w.batch_size.append_figures(report, "batch_size");
  w.commit_us.append_figures(report, "commit_us");
  w.queue_wait_us.append_figures(report, "queue_wait_us");
  return report;
}

std::string Server::Impl::status_line() const {
  const auto w = writer_.stats();
  std::string line = "serving " + config_.database_path + ": " + std::to_string(sessions_.size()) +
                     " connections, " + std::to_string(w.requests) + " requests in " +
                     std::to_string(w.batches) + " batches, queue " +
                     std::to_string(w.queue_depth + w.waiting);
  if (w.transaction_age_ms >= 0) {
    line += ", transaction open " + std::to_string(w.transaction_age_ms) + " ms";
  }
  return line;
}

void Server::Impl::refresh_status() {
  status_timer_.expires_after(config_.status_interval);
  status_timer_.async_wait([this](error_code ec) {
    if (ec || stopping_) return;
    auto line = status_line();
    if (line != last_status_) {
      notify("STATUS=" + line);
      last_status_ = std::move(line);
    }
    refresh_status();
  });
}

void Server::Impl::watchdog_tick() {
  // Pinged at half the interval (sd_watchdog_enabled(3)); only while the writer moves on, so
  // that a writer stuck in a statement or on a lock gets the service restarted.
  watchdog_timer_.expires_after(config_.watchdog_interval / 2);
  watchdog_timer_.async_wait([this](error_code ec) {
    if (ec) return;
    if (writer_.made_progress()) {
      notify("WATCHDOG=1");
    } else {
      log().warn(
          "watchdog: the writer thread made no progress in the last {} ms; not pinging",
          std::chrono::duration_cast<std::chrono::milliseconds>(config_.watchdog_interval / 2)
              .count());
    }
    watchdog_tick();
  });
}

Server::Server(Config config) : impl_(std::make_unique<Impl>(std::move(config))) {}
Server::~Server() = default;
void Server::run() { impl_->run(); }
void Server::request_stop() { impl_->request_stop(); }
const std::string& Server::socket_path() const noexcept { return impl_->config_.socket_path; }

}  // namespace pasyn::server
