// One client connection: see session.hpp.
#include "session.hpp"

#include <unistd.h>

#include <algorithm>
#include <boost/asio/post.hpp>
#include <boost/asio/write.hpp>
#include <cstdio>
#include <span>

#include <pasyn/proto/unix_socket.hpp>

#include "access_control.hpp"
#include "admission.hpp"
#include "log.hpp"

namespace pasyn::server {
namespace {

// Reads offer 4 KiB, or 64 KiB right after a read that filled what it was offered (a busy
// connection); a frame in progress always gets room for all of it.
constexpr std::size_t kSmallRead = 4096;
constexpr std::size_t kLargeRead = 64 * 1024;
constexpr auto kFlushGrace = std::chrono::seconds(5);
// The most tables a SUBSCRIBE may name (PROTOCOL.md §8; see Session::subscribe).
constexpr std::uint32_t kMaxFeedTables = 1024;
// The output buffers' capacity a connection keeps once all its output is written.
constexpr std::size_t kKeptOutputCapacity = 64 * 1024;

}  // namespace

Session::Session(Server::Impl& server, local::socket socket, std::uint64_t id)
    : server_(server),
      socket_(std::move(socket)),
      handshake_timer_(server.io_),
      // Before HELLO_OK only a frame of HELLO's size is read (PROTOCOL.md §2).
      decoder_(std::min(server.config_.max_frame, proto::kMaxHandshakeFrame)),
      id_(id) {}

void Session::start() {
  describe_peer();
  log().info("connection {} opened{}", id_, peer_);
  check_access();
  handshake_timer_.expires_after(server_.config_.handshake_timeout);
  handshake_timer_.async_wait([self = shared_from_this()](error_code ec) {
    if (!ec && !self->hello_done_) self->protocol_error("no HELLO within the handshake timeout");
  });
  do_read();
}

void Session::deliver(std::span<const std::uint8_t> frames, std::size_t replies) {
  // Answered before the replies can reach the client: a SUBSCRIBE it sends once it has them
  // must not find them still in flight (subscribe()).
  inflight_.fetch_sub(replies);
  send(frames);
  wake();
  // The peer sent all it will (EOF) and this was its last answer: close after the flush. The
  // I/O thread checks the same two after setting peer_done_ (on_read): one of us sees both.
  if (peer_done_.load() && inflight_.load() == 0) {
    asio::post(server_.io_, [self = shared_from_this()] { self->finish_sent(); });
  }
}

void Session::finish_sent() {
  if (peer_done_.load() && inflight_.load() == 0 && !closing_ && !closed_) close_after_flush();
}

void Session::release_bytes(std::size_t n) noexcept {
  queued_bytes_.fetch_sub(n);
  server_.budget_.release(n, false);
  wake();
}

void Session::wake() {
  if (read_paused_.load() && !wake_posted_.exchange(true)) {
    asio::post(server_.io_, [self = shared_from_this()] {
      self->wake_posted_.store(false);
      self->resume_reading();
    });
  }
}

std::size_t Session::unsent_bytes() {
  std::lock_guard lk(out_mu_);
  return unsent_;
}

void Session::shed(std::size_t unsent) {
  log().warn(
      "connection {}{} does not read its replies and holds the most of them ({} bytes) while "
      "--max-total-bytes ({}) is reached; disconnecting it",
      id_, peer_, unsent, server_.config_.max_total_bytes);
  close_now();
}

void Session::close_after_flush() {
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

void Session::abandon() noexcept {
  try {
    asio::post(server_.io_, [self = shared_from_this()] { self->close_after_flush(); });
  } catch (const std::exception& e) {
    log().error("cannot close connection {}: {}", id_, e.what());
  }
}

void Session::close_now() {
  if (closed_) return;
  const auto self = std::move(paused_hold_);  // released when this returns, not before
  closed_ = true;
  alive_.store(false, std::memory_order_release);
  if (subscribed_) server_.feed_.unsubscribe(this);
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

void Session::describe_peer() {
  socklen_t len = sizeof cred_;
  if (::getsockopt(socket_.native_handle(), SOL_SOCKET, SO_PEERCRED, &cred_, &len) == 0) {
    peer_ = describe(cred_);
  } else {
    cred_.uid = static_cast<uid_t>(-1);
    cred_.gid = static_cast<gid_t>(-1);
  }
}

void Session::check_access() {
  role_ = assess_peer(server_.config_, cred_.uid, cred_.gid).role;
  if (role_ == Role::kReadOnly) {
    log().info("connection {}{} may only read (--read-only-uid/--read-only-gid)", id_, peer_);
  } else if (role_ == Role::kAdmin) {
    log().debug("connection {}{} is an admin (SHUTDOWN, CHECKPOINT, BACKUP)", id_, peer_);
  }
}

void Session::resume_reading() {
  if (!read_paused_.load() || closing_ || closed_) return;
  read_paused_.store(false);
  const auto self = std::move(paused_hold_);  // alive through pump(), which may pause again
  pump();
}

bool Session::reading_blocked(std::size_t parsed) const {
  const auto& c = server_.config_;
  // Before HELLO_OK only a handshake-sized frame is read (decoder_), and a HELLO queues no
  // request: the limits below cannot be passed by it. (While requests queued behind a client
  // transaction filled --max-total-bytes, a new connection's HELLO was not read, and it was
  // closed for not sending one within the handshake timeout: probe24.)
  if (!hello_done_) return false;
  // The connection holding the client transaction is read past the total and past
  // --max-inflight: the requests that fill them may be waiting for that transaction (its own
  // writes sent without the handle too), which only this connection's requests can end
  // (without it they would wait for --lock-wait, and the transaction for its idle timeout; a
  // probe's 1,100 writes queued behind their own client's transaction stopped its next
  // statement from being read). Its own --max-queued-bytes still bounds it. (Set before
  // BEGIN's reply, whose request's release wakes a connection paused meanwhile.)
  if (queued_bytes_.load() >= c.max_queued_bytes) return true;
  if (inflight_.load() + parsed < c.max_inflight && !server_.budget_.full()) return false;
  return !server_.writer_.holds_transaction(this);
}

ByteCharge Session::charge(std::size_t n) {
  queued_bytes_.fetch_add(n);
  server_.budget_.add(n, false);
  return ByteCharge(shared_from_this(), n);
}

void Session::do_read() {
  if (closing_ || closed_ || peer_done_.load()) return;
  auto space = decoder_.prepare(busy_reads_ ? kLargeRead : kSmallRead);
  offered_ = space.size();
  socket_.async_read_some(
      asio::buffer(space.data(), space.size()),
      [self = shared_from_this()](error_code ec, std::size_t n) { self->on_read(ec, n); });
}

void Session::on_read(error_code ec, std::size_t n) {
  if (closed_) return;
  if (ec) {
    if (closing_) return;  // we shut the receive side ourselves; writes finish the close
    if (ec == asio::error::eof && hello_done_) {
      // The peer shut its sending side, or closed: either way every request it sent gets its
      // reply (PROTOCOL.md §2), and the connection closes after the last one. (A peer that
      // closed fully makes the send fail, which closes at once.) A partial frame left in the
      // decoder is not a request: it is dropped with the connection.
      peer_done_.store(true);
      finish_sent();
      return;
    }
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

void Session::pump() {
  // Parses again when the limit lifted between the pause and its re-check: the frames still
  // in the decoder would otherwise wait for bytes that may never come.
  while (pump_once()) {
  }
}

bool Session::pump_once() {
  // (Nothing here runs another session's pump_once(); were it to, the inner call would parse into
  // a vector of its own rather than into the requests of this one.)
  std::vector<Request> nested;
  std::vector<Request>& requests = server_.parsed_.empty() ? server_.parsed_ : nested;
  struct Clear {  // refused or submitted, nothing stays behind (a request holds its session)
    std::vector<Request>& requests;
    ~Clear() {
      requests.clear();
      // After a burst (the buffer came back from the writer's queue): not pinned for ever.
      if (requests.capacity() > Writer::kKeptRequests) std::vector<Request>().swap(requests);
    }
  } clear{requests};
  proto::FrameView frame;
  bool limited = false;  // the limits stopped the parsing (the decoder may hold more frames)
  for (;;) {
    if (reading_blocked(requests.size())) {
      limited = true;
      break;
    }
    const auto status = decoder_.next(frame);
    if (status == proto::FrameDecoder::Status::kNeedMore) break;
    if (status == proto::FrameDecoder::Status::kError) {
      protocol_error(hello_done_ ? decoder_.error() : "before the handshake: " + decoder_.error());
      break;
    }
    const std::size_t before = requests.size();
    const bool go_on = handle_frame(frame, requests);
    // Counted from now until the writer has answered and dropped the request.
    if (requests.size() > before) {
      // A large frame's whole buffer, if the request holds it (Request::frame).
      requests.back().charge =
          charge(std::max(proto::kHeaderSize + frame.payload.size(), requests.back().frame_bytes));
    }
    if (!go_on) break;
  }
  if (!requests.empty()) {
    // Counted before the writer can answer them, so that the count never goes negative.
    inflight_.fetch_add(requests.size(), std::memory_order_acq_rel);
    if (!server_.writer_.submit(requests, &server_.spare_payloads_)) {
      inflight_.fetch_sub(requests.size(), std::memory_order_acq_rel);
      refuse(requests);
    }
  }
  if (closing_ || closed_) return false;
  if (reading_blocked()) {
    // Paused first, then checked again: a release from now on sees the flag and wakes us.
    read_paused_.store(true);
    if (server_.budget_.full()) server_.budget_.wait_for_room();
    if (reading_blocked()) {
      paused_hold_ = shared_from_this();  // until resume_reading() or close_now()
      return false;
    }
    read_paused_.store(false);
    return true;  // room again: parse what the decoder holds before reading more
  }
  // The limit stopped the parsing, and the writer answered enough meanwhile that it no longer
  // does: the frames still in the decoder are parsed before any more bytes are read (they would
  // otherwise wait for bytes that may never come, and be dropped at the end of the stream: a
  // probe pipelining 3,000 requests got 616 replies).
  if (limited) return true;
  do_read();
  return false;
}

bool Session::handle_frame(const proto::FrameView& f, std::vector<Request>& out) {
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
    send(reply);
    return true;
  }
  if (type == MsgType::kSubscribe) return subscribe(f, !out.empty());
  if (subscribed_ && type != MsgType::kPing) {
    std::vector<std::uint8_t> reply;
    proto::encode_pasyn_error(reply, f.request_id, proto::PasynCode::kMisuse,
                              "this connection is a change feed: it may only send PING");
    send(reply);
    return true;
  }
  Request r;
  r.type = static_cast<MsgType>(proto::base_type(f.type));
  r.in_tx = proto::in_transaction(f.type);
  r.id = f.request_id;
  r.uid = static_cast<std::uint32_t>(cred_.uid);
  bool ok = false;
  // The execute family keeps the payload (a copy, or for a large frame the buffer it arrived
  // in) and reads SQL and values in place; an idempotency key comes first (PROTOCOL.md §6.3).
  std::span<const std::uint8_t> body;
  if (r.type >= MsgType::kExecute && r.type <= MsgType::kExecuteScript) {
    std::size_t held = 0;
    if (auto frame = decoder_.take_frame_buffer(held)) {  // large: f.payload stays where it is
      r.frame = std::move(frame);
      r.frame_bytes = held;
      body = f.payload;
    } else {
      server_.copy_payload(f.payload, r.payload);
      body = r.payload;
    }
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
        return protocol_error(std::string("no transaction number in ") + proto::to_string(r.type));
      }
      body = body.subspan(body.size() - reader.remaining());
    }
  }
  switch (r.type) {
    case MsgType::kPing: {
      if (!(ok = proto::decode_empty(f.payload, why))) break;
      std::vector<std::uint8_t> reply;
      proto::encode_empty(reply, MsgType::kPong, f.request_id);
      send(reply);
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
      send(reply);
      return true;
    }
    case MsgType::kCheckpoint:
    case MsgType::kBackup: {
      server_.copy_payload(f.payload, r.payload);
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
    send(reply);
    return true;
  }
  r.sink = shared_from_this();
  out.push_back(std::move(r));
  return true;
}

bool Session::subscribe(const proto::FrameView& f, bool parsed_requests) {
  // A filter names at most kMaxFeedTables tables, judged from the count before any is decoded:
  // a 16 MiB frame naming 3 million held ~120 MiB per subscriber (uncounted by any budget) and
  // had the I/O thread compare each held commit with each name for seconds (probe19). Whoever
  // wants that many subscribes to every table (none named). The connection goes on.
  if (f.payload.size() >= 4) {
    const std::uint32_t count = static_cast<std::uint32_t>(f.payload[0]) |
                                static_cast<std::uint32_t>(f.payload[1]) << 8 |
                                static_cast<std::uint32_t>(f.payload[2]) << 16 |
                                static_cast<std::uint32_t>(f.payload[3]) << 24;
    // (A count the payload cannot hold, at 4 bytes a name at least, is a malformed frame: the
    // decoder below says so, a protocol error.)
    if (count > kMaxFeedTables && (f.payload.size() - 4) / 4 >= count) {
      std::vector<std::uint8_t> reply;
      proto::encode_pasyn_error(reply, f.request_id, proto::PasynCode::kLimit,
                                "SUBSCRIBE names at most " + std::to_string(kMaxFeedTables) +
                                    " tables (this one " + std::to_string(count) +
                                    "): name none to hear about every table");
      send(reply);
      return true;
    }
  }
  proto::Subscribe m;
  std::string why;
  if (!proto::decode_subscribe(f.payload, m, why)) return protocol_error("bad SUBSCRIBE: " + why);
  std::vector<std::uint8_t> reply;
  if (subscribed_) {
    proto::encode_pasyn_error(reply, f.request_id, proto::PasynCode::kMisuse,
                              "this connection is subscribed already");
    send(reply);
    return true;
  }
  // After SUBSCRIBE only PING is read: a transaction held here could not end but by the idle
  // timeout, and replies still owed would mix with the feed. Refused; the connection goes on.
  // (Every request answered, the writer's transaction owner is exact: only this connection
  // could make it this one.)
  if (parsed_requests || inflight_.load() > 0 || server_.writer_.holds_transaction(this)) {
    proto::encode_pasyn_error(
        reply, f.request_id, proto::PasynCode::kMisuse,
        server_.writer_.holds_transaction(this)
            ? "SUBSCRIBE refused: this connection holds a transaction (end it first, or "
              "subscribe on a connection of its own)"
            : "SUBSCRIBE refused: this connection has requests not answered yet (wait for "
              "their replies, or subscribe on a connection of its own)");
    send(reply);
    return true;
  }
  // Any role may subscribe: the feed changes nothing.
  if (auto error = server_.feed_.subscribe(shared_from_this(), f.request_id, m)) {
    proto::encode_pasyn_error(reply, f.request_id, proto::PasynCode::kMisuse, *error);
    send(reply);
    return true;
  }
  subscribed_ = true;
  log().info("connection {} subscribed to the change feed ({} tables)", id_, m.tables.size());
  return true;
}

std::optional<std::pair<proto::PasynCode, std::string>> Session::refuse_by_role(Request& r) const {
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
    log().debug("connection {}{}: {} refused: not an admin", id_, peer_, proto::to_string(r.type));
    return std::pair{proto::PasynCode::kPermission, std::move(*refusal)};
  }
  return std::nullopt;
}

std::optional<std::pair<proto::PasynCode, std::string>> Session::refuse_over_limits(
    const Request& r) const {
  const auto& c = server_.config_;
  if (r.sql.find('\0') != std::string_view::npos) {  // SQLite would stop reading there
    return std::pair{proto::PasynCode::kMisuse, std::string("the SQL text contains a NUL byte")};
  }
  if (r.sql.size() > c.max_sql_length) {
    return std::pair{proto::PasynCode::kTooLarge,
                     "the SQL text is " + std::to_string(r.sql.size()) +
                         " bytes, more than --max-sql-length " + std::to_string(c.max_sql_length)};
  }
  const std::uint32_t params =
      r.type == proto::MsgType::kExecuteMany ? r.many.max_params : r.params.count;
  if (params > c.max_params) {
    return std::pair{
        proto::PasynCode::kTooLarge,
        std::to_string(params) +
            (r.type == proto::MsgType::kExecuteMany ? " parameters in a row" : " parameters") +
            ", more than --max-params " + std::to_string(c.max_params)};
  }
  return std::nullopt;
}

void Session::refuse(std::vector<Request>& requests) {
  std::vector<std::uint8_t> replies;
  for (const auto& r : requests) {
    proto::encode_pasyn_error(replies, r.id, proto::PasynCode::kShuttingDown,
                              "pasyn-writerd is shutting down; the request was not executed");
  }
  send(replies);
}

bool Session::protocol_error(const std::string& why) {
  if (closing_ || closed_) return false;
  if (server_.protocol_errors_.admit(Clock::now())) {
    log().warn("connection {}{}: protocol error: {}; closing it", id_, peer_, why);
  }
  std::vector<std::uint8_t> reply;
  proto::encode_pasyn_error(reply, 0, proto::PasynCode::kProtocol, why);
  send(reply);
  close_after_flush();
  return false;
}

void Session::send(std::span<const std::uint8_t> frames) {
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

void Session::do_write() {
  {
    std::lock_guard lk(out_mu_);
    if (!pending_.empty() && !out_closed_) {
      writing_buf_.clear();
      writing_buf_.swap(pending_);
    } else {
      writing_ = false;
      writing_buf_.clear();
      // Idle again: keep no more than a small reply's capacity. An idle connection kept the
      // buffers of the largest reply it ever had, outside --max-total-bytes (probe22: 300
      // connections that had one 1 MB reply each held 165 MB until they closed).
      if (writing_buf_.capacity() > kKeptOutputCapacity)
        std::vector<std::uint8_t>().swap(writing_buf_);
      if (pending_.capacity() > kKeptOutputCapacity) std::vector<std::uint8_t>().swap(pending_);
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

void Session::add_unsent_locked(std::size_t n) {
  unsent_ += n;
  queued_bytes_.fetch_add(n);
  server_.budget_.add(n, true);
}

void Session::release_unsent_locked(std::size_t n) {
  unsent_ -= n;
  queued_bytes_.fetch_sub(n);
  server_.budget_.release(n, true);
  wake();
}

void Session::drop_output_locked() {
  out_closed_ = true;
  pending_.clear();
  if (unsent_ > 0) release_unsent_locked(unsent_);
}

std::string Session::hex(std::uint8_t v) {
  char buf[8];
  std::snprintf(buf, sizeof buf, "0x%02x", v);
  return buf;
}

}  // namespace pasyn::server
