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

// The first connection, set up on the calling thread: the I/O thread has nothing to do with it
// until a write waits for room or the reader role is handed to it.
void MultiplexedClient::Impl::connect() {
  const auto deadline = detail::deadline_after(options_.connect_timeout);
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
  adopt(fd, max_frame);
}

/// After the connection was lost: a new connection for later calls (SPEC §3), never re-sending
/// anything of the old one. Attempts are spaced by a backoff that doubles from 25 ms to 2 s
/// while the daemon stays unreachable; inside it, calls fail at once. REQUIRES: mu_ not held.
void MultiplexedClient::Impl::reconnect(const CallBound& bound) {
  const auto not_sent = [&](const std::string& why) {
    return TimeoutError("no connection to pasyn-writerd at " + path_ + " within the call's " +
                        std::to_string(bound.timeout.count()) + " ms (" + why +
                        "); its request was not sent");
  };
  {
    // One reconnect at a time: the others wait for it, each within its own bound. (A flag and
    // a condition variable, not a timed mutex: ThreadSanitizer does not see the
    // pthread_mutex_clocklock that try_lock_until uses, and reports its unlock.)
    std::unique_lock lk(mu_);
    while (reconnecting_ && state_ == State::kLost) {
      if (bound.deadline == std::chrono::steady_clock::time_point::max()) {
        reconnected_.wait(lk);
      } else if (reconnected_.wait_until(lk, bound.deadline) == std::cv_status::timeout &&
                 reconnecting_ && state_ == State::kLost) {
        throw not_sent("another thread is reconnecting");
      }
    }
    if (state_ != State::kLost) return;  // closed (check_open says so) or already reconnected
    if (std::chrono::steady_clock::now() < next_attempt_) {
      throw ConnectionLostError("the connection to pasyn-writerd at " + path_ + " was lost (" +
                                lost_reason_ + "); reconnecting is backing off");
    }
    reconnecting_ = true;
  }
  struct Done {
    Impl& impl;
    ~Done() {
      std::lock_guard lk(impl.mu_);
      impl.reconnecting_ = false;
      impl.reconnected_.notify_all();
    }
  } done{*this};
  const auto connect_by = detail::deadline_after(options_.connect_timeout);
  const bool call_bounds = bound.deadline < connect_by;
  int fd = -1;
  std::uint32_t max_frame = 0;
  try {
    fd = detail::connect_to_daemon(path_, options_, std::min(connect_by, bound.deadline));
    max_frame = detail::handshake(fd, path_, options_, std::min(connect_by, bound.deadline));
  } catch (const TimeoutError&) {
    if (fd >= 0) ::close(fd);
    // Only this call's own bound ran out: no backoff for the others (the daemon may just be
    // slower than this call allows).
    if (call_bounds) throw not_sent("the daemon did not answer in time");
    back_off();
    throw;  // connect_timeout ran out: its own message says so
  } catch (...) {
    if (fd >= 0) ::close(fd);
    back_off();
    throw;
  }
  install(fd, max_frame);
}

void MultiplexedClient::Impl::back_off() {
  std::lock_guard lk(mu_);
  next_attempt_ = std::chrono::steady_clock::now() + backoff_;
  backoff_ = std::min(backoff_ * 2, std::chrono::milliseconds(2000));
}

void MultiplexedClient::Impl::close() {
  std::unique_lock lk(mu_);
  if (state_ == State::kClosed) return;
  state_ = State::kClosed;
  slot_free_.notify_all();
  reconnected_.notify_all();  // a call waiting for another thread's reconnect: closed now
  if (forked_) {              // the parent's socket and thread: leave them all alone
    abandon_parent_io();
    return;
  }
  retire_conn();     // a caller reading wakes, sees the connection gone, and lets go
  if (!io_) return;  // the first connection failed before the I/O thread started
  io_->stop = true;
  wake_io();
  lk.unlock();
  if (io_->thread.joinable()) io_->thread.join();
  // The requests still waiting were sent, or may have been: like a lost connection's, their
  // outcome is unknown (the daemon runs what it read), so they fail with ConnectionLostError.
  // ConnectionClosedError is for the calls made after close(), which send nothing.
  fail_all(
      [](const std::string& what) { return std::make_exception_ptr(ConnectionLostError(what)); },
      "the client was closed before the reply came; the request may still be executed "
      "(outcome unknown)");
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
  // The parent's socket: neither shut down nor closed (its reference is leaked), so nothing of
  // the parent's connection changes.
  (void)new std::shared_ptr<Conn>(std::move(conn_));
  // The parent's requests: their callers live in the parent. Leaked too: completing a
  // promise another (absent) thread may have been using is not safe here.
  (void)new Pending(std::move(pending_));
  pending_.clear();
  reader_ = nullptr;
  io_watch_ = false;
  io_polls_gen_ = 0;                            // the parent's I/O thread's
  followers_head_ = followers_tail_ = nullptr;  // waiters of the parent's threads
  outbox_.clear();
  write_scheduled_ = false;
  forked_ = false;
}

// A reconnect: the connected descriptor becomes the connection, unless the client was closed
// meanwhile.
void MultiplexedClient::Impl::install(int fd, std::uint32_t max_frame) {
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
  adopt(fd, max_frame);
}

// The connected socket `fd` becomes the connection: a new generation, nobody reading it.
// Takes `fd` (closed if this throws). REQUIRES: mu_ held.
void MultiplexedClient::Impl::adopt(int fd, std::uint32_t max_frame) {
  std::shared_ptr<Conn> conn;
  try {
    conn = std::make_shared<Conn>(fd, max_frame, generation_ + 1);
  } catch (...) {
    ::close(fd);
    throw;
  }
  conn_ = std::move(conn);
  ++generation_;
  reader_ = nullptr;
  max_frame_ = max_frame;
  outbox_.clear();
  write_scheduled_ = false;
  backoff_ = std::chrono::milliseconds(25);
  if (state_ != State::kClosed) state_ = State::kOpen;
}

}  // namespace pasyn
