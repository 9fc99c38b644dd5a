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
  // At most 50 connections a second are logged (a flood of connections does not flood the
  // log); "closed" only for those whose "opened" was.
  logged_ = server_.connection_lines_.admit(Clock::now());
  if (logged_) log().info("connection {} opened{}", id_, peer_);
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
  note_partial_frame(0, false);  // what the decoder holds goes with the connection
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
  if (logged_) log().info("connection {} closed", id_);
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
  // The fair share counts the requests this read parsed so far in the backlog too: submitted
  // only once the read is parsed, they would let every connection past the share by a read's
  // worth (hundreds of requests each; CI's TSan run saw a quiet request behind 36,541).
  const std::size_t mine = inflight_.load() + parsed;
  if (mine < c.max_inflight && !server_.budget_.full() &&
      (mine < Writer::kFairShare || server_.writer_.backlog() + parsed < Writer::kFairBacklog)) {
    return false;
  }
  return !server_.writer_.holds_transaction(this);
}

void Session::note_partial_frame(std::size_t held, bool parsed) {
  if (held > 0 && (partial_ == 0 || parsed)) {  // a frame began since the last look
    frame_deadline_ = std::chrono::steady_clock::now() + server_.config_.handshake_timeout;
  }
  // Most reads end between frames (0 before and after): no atomic write then.
  if (held > partial_) {
    server_.partial_bytes_.fetch_add(held - partial_, std::memory_order_relaxed);
  } else if (held < partial_) {
    server_.partial_bytes_.fetch_sub(partial_ - held, std::memory_order_relaxed);
  }
  partial_ = held;
  if (held > 0 && !partial_watched_ && !closing_ && !closed_) watch_partial_frame();
}

void Session::watch_partial_frame() {
  partial_watched_ = true;
  handshake_timer_.expires_at(frame_deadline_);
  handshake_timer_.async_wait([self = shared_from_this()](error_code ec) {
    self->partial_watched_ = false;
    // (Complete frames waiting behind the limits are not late: the daemon holds them back.)
    if (ec || self->closing_ || self->closed_ || self->partial_ == 0 || self->peer_done_.load() ||
        self->decoder_.frame_ready()) {
      return;
    }
    if (std::chrono::steady_clock::now() < self->frame_deadline_) {  // a later frame's
      self->watch_partial_frame();
      return;
    }
    self->protocol_error("a frame was not complete within the handshake timeout (" +
                         std::to_string(self->server_.config_.handshake_timeout.count()) +
                         " ms) of its first byte");
  });
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
      note_partial_frame(0, false);  // dropped with the connection, not waited for
      finish_sent();
      return;
    }
    if (ec != asio::error::eof && ec != asio::error::connection_reset &&
        server_.read_errors_.admit(Clock::now())) {
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
  bool parsed = false;   // a frame was taken
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
    parsed = true;
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
  note_partial_frame(hello_done_ ? decoder_.buffered() : 0, parsed);
  // A connection finishes the frame it began: with only part of one in the decoder (no complete
  // frame waiting to be parsed), it is read on, whatever the limits say, for at most the
  // frame's deadline. (Paused mid-frame, a client that writes its request whole before reading
  // its replies waited for the daemon, which waited for it to read, for ever; review21.)
  const bool in_frame = partial_ > 0 && !decoder_.frame_ready();
  if (!in_frame && reading_blocked()) {
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
  if (limited && !in_frame) return true;
  do_read();
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
                        if (self->server_.write_errors_.admit(Clock::now())) {
                          log().info("connection {}: write failed: {}", self->id_, ec.message());
                        }
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

}  // namespace pasyn::server
