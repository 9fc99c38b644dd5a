// MultiplexedClient::Impl: the connection's life (client_impl.hpp): connecting, reconnecting
// after a loss, closing, and leaving the parent's connection alone in a forked child.
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <future>
#include <memory>
#include <mutex>
#include <string>
#include <unordered_map>

#include "client_impl.hpp"

namespace pasyn {

// The first connection. Its socket is set up here, on the calling thread, not handed to the
// I/O thread as install() does for a reconnect: the new thread has no handler that could touch
// the socket yet, and waiting for it to be scheduled cost the constructor milliseconds on a
// loaded machine (a thread wake-up; many processes starting clients at once).
void MultiplexedClient::Impl::connect() {
  const auto deadline = std::chrono::steady_clock::now() + options_.connect_timeout;
  const int fd = detail::connect_to_daemon(path_, options_, deadline);
  std::uint32_t max_frame = 0;
  std::unique_lock lk(mu_, std::defer_lock);
  try {
    max_frame = detail::handshake(fd, path_, options_, deadline);
    lk.lock();
    start_io();
  } catch (...) {
    ::close(fd);
    throw;
  }
  detail::error_code ec;
  io_->socket.assign(detail::local(), fd, ec);  // safe: no handler of the I/O thread uses it
  if (ec) {
    ::close(fd);
    throw ConnectionLostError("cannot use the socket to " + path_ + ": " + ec.message());
  }
  do_read(adopt(fd, max_frame));  // starts the read; its handler runs on the I/O thread
}

/// After the connection was lost: a new connection for later calls (SPEC §3), never re-sending
/// anything of the old one. Attempts are spaced by a backoff that doubles from 25 ms to 2 s
/// while the daemon stays unreachable; inside it, calls fail at once. REQUIRES: mu_ not held.
void MultiplexedClient::Impl::reconnect() {
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

void MultiplexedClient::Impl::close() {
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

// In a forked child, on the first use of this client: abandons the parent's connection
// untouched and marks the connection lost, so that the call reconnects on a connection of
// this process. REQUIRES: mu_ held, forked_.
void MultiplexedClient::Impl::leave_parent_connection() {
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
void MultiplexedClient::Impl::abandon_parent_io() {
  (void)io_.release();  // deliberately leaked; see Io
  // The parent's requests: their callers live in the parent. Leaked too: completing a
  // promise another (absent) thread may have been using is not safe here.
  (void)new Pending(std::move(pending_));  // (its nodes stay allocated in pending_pool_)
  pending_.clear();
  outbox_.clear();
  write_scheduled_ = false;
  fd_ = -1;
  forked_ = false;
}

// Hands a connected descriptor to the I/O thread and waits until it reads from it. Never
// waits on an event loop that may have stopped: the handler is posted under mu_ only while
// the client is not closed, and close() posts its own under mu_ before stopping the loop.
void MultiplexedClient::Impl::install(int fd, std::uint32_t max_frame) {
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
    detail::asio::post(io_->context, [this, self = shared_from_this(), fd, max_frame, &installed] {
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
      std::uint64_t gen;
      {
        std::lock_guard relock(mu_);
        gen = adopt(fd, max_frame);
      }
      do_read(gen);
      installed.set_value();
    });
  }
  done.get();
}

// The connected socket `fd`, now assigned to io_->socket, becomes the connection: a new
// generation, whose number is returned. REQUIRES: mu_ held; on the I/O thread, or before it
// has a handler of the socket.
std::uint64_t MultiplexedClient::Impl::adopt(int fd, std::uint32_t max_frame) {
  decoder_ = proto::FrameDecoder(std::max(max_frame, proto::kDefaultMaxFrame));
  busy_reads_ = false;
  fd_ = fd;
  max_frame_ = max_frame;
  outbox_.clear();
  write_scheduled_ = false;
  backoff_ = std::chrono::milliseconds(25);
  if (state_ != State::kClosed) state_ = State::kOpen;
  return ++generation_;
}

}  // namespace pasyn
