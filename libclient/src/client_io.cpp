// MultiplexedClient::Impl: what moves bytes (client_impl.hpp): sending the outbox from the
// calling thread or the I/O thread, reading as the holder of the reader role (a synchronous
// caller or the I/O thread), handing the role on, the replies' delivery, and losing the
// connection.
#include <poll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <exception>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <system_error>
#include <vector>

#include "client_impl.hpp"

namespace pasyn {

namespace {

// How many times the calling thread was switched out against its will (ReplyPoll's sign that
// another thread wanted its CPU while it polled).
long involuntary_switches() {
  rusage ru{};
  return ::getrusage(RUSAGE_THREAD, &ru) == 0 ? ru.ru_nivcsw : 0;
}

}  // namespace

// Sends the outbox from the calling thread (no hand-off to the I/O thread, which costs a
// wake-up per request when idle). Whatever the socket does not take at once is left to the
// I/O thread. REQUIRES: mu_ held, state_ kOpen, no write scheduled.
void MultiplexedClient::Impl::send_now() {
  const auto unsent = outbox_.unsent();
  outbox_.consume(proto::send_nonblocking(conn_->fd, unsent.data(), unsent.size()));
  if (outbox_.empty()) return;
  schedule_write();  // a full socket, or an error the I/O thread's send then reports
}

// The I/O thread sends what the socket takes of the outbox; clears write_scheduled_ once it is
// empty. Returns 0, or the errno of a failed send. REQUIRES: mu_ held, conn_.
int MultiplexedClient::Impl::flush_outbox() {
  const auto unsent = outbox_.unsent();
  const std::size_t sent = proto::send_nonblocking(conn_->fd, unsent.data(), unsent.size());
  const int error = errno;
  outbox_.consume(sent);
  if (outbox_.empty()) {
    write_scheduled_ = false;
    return 0;
  }
  return error == EAGAIN || error == EWOULDBLOCK ? 0 : error;
}

// The I/O thread's loop. It polls its eventfd, and the socket only for what it has to do:
// POLLIN while it holds the reader role, or while nobody does after it last did (io_watch_,
// so that the next asynchronous call needs no wake-up), POLLOUT while a write waits for room.
// It holds a reference to the Conn only while it polls it.
void MultiplexedClient::Impl::run_io(Io& io) {
  std::unique_lock lk(mu_);
  while (!io.stop) {
    std::shared_ptr<Conn> c;
    short events = 0;
    io_polls_gen_ = 0;
    if (state_ == State::kOpen && conn_) {
      if (write_scheduled_) {
        if (const int error = flush_outbox()) {
          const auto gen = conn_->gen;
          lk.unlock();
          lose("write failed: " + std::system_category().message(error), gen);
          lk.lock();
          continue;
        }
        if (write_scheduled_) events |= POLLOUT;
      }
      if (reader_ == &io_lead_ || (!reader_ && io_watch_)) events |= POLLIN;
      if (events) c = conn_;
      if (events & POLLIN) io_polls_gen_ = c->gen;
    }
    lk.unlock();
    pollfd fds[2] = {{io.wake, POLLIN, 0}, {c ? c->fd : -1, events, 0}};
    if (::poll(fds, 2, -1) > 0) {
      if (fds[0].revents & POLLIN) {
        std::uint64_t count;
        [[maybe_unused]] const auto n = ::read(io.wake, &count, sizeof count);
      }
      if ((events & POLLIN) && (fds[1].revents & (POLLIN | POLLHUP | POLLERR))) {
        bool mine;
        {
          lk.lock();
          io_polls_gen_ = 0;
          // Watching an idle connection, this thread takes the role: nothing is pending, so
          // what came is the daemon's connection-level error or the end of the stream.
          if (!reader_ && pending_.empty() && conn_ == c) reader_ = &io_lead_;
          mine = reader_ == &io_lead_;
          // A synchronous caller reads: stop watching, or this loop would spin on its data.
          if (!mine) io_watch_ = false;
          lk.unlock();
        }
        // The role is this thread's until it lets go below; only lose() or close() take it,
        // and they shut the socket down, which the read then meets.
        if (mine) read_some(*c);
      }
    }
    c.reset();
    lk.lock();
    if (reader_ == &io_lead_ && pending_.empty()) {
      reader_ = nullptr;
      io_watch_ = true;  // asynchronous calls: the next one likely follows, watch for it
    }
  }
}

// A reading caller's turn: reads and delivers until `self`'s reply has come (then lets go of
// the role), or until `deadline`. REQUIRES: mu_ not held.
MultiplexedClient::Impl::Turn MultiplexedClient::Impl::lead(
    detail::WaitNode& self, const std::chrono::steady_clock::time_point* deadline) {
  std::shared_ptr<Conn> c;
  bool lone, poll_first = false;  // see reply_poll.hpp
  std::uint64_t next_id_then;
  {
    std::lock_guard lk(mu_);
    if (reader_ != &self) return Turn::kLetGo;
    c = conn_;
    lone = pending_.size() == 1;  // only this caller's request
    next_id_then = next_id_;
    if (lone) poll_first = reply_poll_.choose();
  }
  const bool polls = poll_first;
  bool hit = false, preempted = false;
  for (;;) {
    if (self.baton.done()) {
      std::lock_guard lk(mu_);
      if (reader_ == &self) hand_on();
      reply_poll_.finished(lone && next_id_ == next_id_then);  // nothing else sent meanwhile
      if (polls) reply_poll_.polled(hit, preempted);
      return Turn::kDone;
    }
    pollfd p{c->fd, POLLIN, 0};
    if (poll_first) {  // once, before the first sleep (and before the time left is taken)
      poll_first = false;
      auto until = std::chrono::steady_clock::now() + detail::ReplyPoll::kWindow;
      if (deadline) until = std::min(until, *deadline);
      const long switched = involuntary_switches();
      const timespec zero{};
      int ready;
      while ((ready = ::ppoll(&p, 1, &zero, nullptr)) == 0 &&
             std::chrono::steady_clock::now() < until) {
      }
      hit = ready > 0;
      preempted = involuntary_switches() != switched;
    }
    timespec left{};
    if (deadline) {
      const auto ns = std::chrono::duration_cast<std::chrono::nanoseconds>(
                          *deadline - std::chrono::steady_clock::now())
                          .count();
      if (ns <= 0) return Turn::kDeadline;  // still the reader: give_up() hands the role on
      left.tv_sec = static_cast<std::time_t>(ns / 1'000'000'000);
      left.tv_nsec = static_cast<long>(ns % 1'000'000'000);
    }
    // ppoll() for POLLIN, then a non-blocking recv(), rather than one blocking recv(): on a Unix
    // socket the daemon's read of our request wakes every plain waiter (write space), and only
    // poll's waiter filters that wake-up out by its events. Measured (one caller, sequential
    // INSERTs, perf stat): a blocking recv() made 3.0 system calls per call instead of 4.0 but
    // 1.9 context switches instead of 1.0.
    const int r = ::ppoll(&p, 1, deadline ? &left : nullptr, nullptr);
    if (r <= 0) continue;  // the deadline (seen above), or a signal
    bool current;
    try {
      current = read_some(*c);
    } catch (...) {
      // bad_alloc while reading: as on the I/O thread, the connection fails, so that no
      // completion is left pointing at a waiter about to go (if even that fails: terminate).
      [&]() noexcept { lose("internal error while reading a reply", c->gen); }();
      current = false;
    }
    // Not current: lost or closed, which failed every pending completion (this one's too, or
    // about to) and took the role.
    if (!current) return Turn::kLetGo;
  }
}

// The caller of `self` gives up at its deadline. REQUIRES: mu_ not held.
bool MultiplexedClient::Impl::give_up(detail::WaitNode& self, std::uint64_t id) {
  std::lock_guard lk(mu_);
  if (reader_ == &self) hand_on();  // its own request is still pending: someone must read
  unlist(self);
  self.baton.clear_lead();  // handed the role just now, and handed it on above
  auto it = pending_.find(id);
  if (it == pending_.end()) return false;
  it->second.discard();
  return true;
}

void MultiplexedClient::Impl::step_aside(detail::WaitNode& self) {
  std::lock_guard lk(mu_);
  if (reader_ == &self) {
    hand_on();  // also when handed the role just now (its kLead is cleared below)
  } else {
    unlist(self);
  }
  self.baton.clear_lead();
}

bool MultiplexedClient::Impl::step_back(detail::WaitNode& self, std::uint64_t id) {
  std::lock_guard lk(mu_);
  if (state_ != State::kOpen || pending_.find(id) == pending_.end()) return false;
  if (reader_ == nullptr) {
    reader_ = &self;
    io_watch_ = false;
    return true;
  }
  enlist(self);
  return false;
}

// The reader lets go of the role. REQUIRES: mu_ held.
void MultiplexedClient::Impl::hand_on() {
  reader_ = nullptr;
  if (state_ != State::kOpen || pending_.empty()) return;
  if (auto* next = followers_head_) {
    unlist(*next);
    reader_ = next;
    next->baton.post(detail::Baton::kLead);  // alive: it leaves the list only under mu_
  } else {  // only asynchronous completions (or discarded replies) are left
    give_role_to_io();
  }
}

// REQUIRES: mu_ held through `lk`, state_ kOpen, no reader (so nothing is pending).
bool MultiplexedClient::Impl::peek_idle(std::unique_lock<std::mutex>& lk) {
  char byte;
  if (::recv(conn_->fd, &byte, 1, MSG_PEEK | MSG_DONTWAIT) < 0 &&
      (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)) {
    return false;  // nothing came: the usual case
  }
  detail::WaitNode self;  // data, end of stream or an error: read it as the reader
  reader_ = &self;
  auto c = conn_;
  lk.unlock();
  try {
    read_some(*c);
  } catch (...) {
    lk.lock();
    if (reader_ == &self) hand_on();
    throw;
  }
  c.reset();
  lk.lock();
  if (reader_ == &self) hand_on();
  return true;
}

// One read, and the delivery of every complete frame. REQUIRES: the reader of `c`.
bool MultiplexedClient::Impl::read_some(Conn& c) {
  const auto space = c.decoder.prepare(c.busy_reads ? detail::kLargeRead : detail::kSmallRead);
  ssize_t n;
  do {
    n = ::recv(c.fd, space.data(), space.size(), MSG_DONTWAIT);
  } while (n < 0 && errno == EINTR);
  if (n < 0) {
    if (errno == EAGAIN || errno == EWOULDBLOCK) return true;
    lose("read failed: " + std::system_category().message(errno), c.gen);
    return false;
  }
  if (n == 0) {
    lose("the daemon closed the connection", c.gen);
    return false;
  }
  c.decoder.commit(static_cast<std::size_t>(n));
  c.busy_reads = static_cast<std::size_t>(n) == space.size();
  proto::FrameView frame;
  for (;;) {
    const auto status = c.decoder.next(frame);
    if (status == proto::FrameDecoder::Status::kNeedMore) {
      c.decoder.trim();  // every frame was delivered (copied out): keep no large buffer idle
      return true;
    }
    if (status == proto::FrameDecoder::Status::kError) {
      lose("malformed reply: " + c.decoder.error(), c.gen);
      return false;
    }
    if (!deliver(frame, c.gen)) return false;
  }
}

bool MultiplexedClient::Impl::deliver(const proto::FrameView& frame, std::uint64_t gen) {
  detail::Completion done;
  bool found = false;
  {
    std::lock_guard lk(mu_);
    if (state_ != State::kOpen || gen != generation_) return false;  // failed meanwhile
    auto it = pending_.find(frame.request_id);
    if (it != pending_.end()) {
      done = take_pending(it);
      found = true;
      if (auto* waiter = done.waiter()) unlist(*waiter);  // never handed the role from now on
      if (slot_waiters_ > 0 && pending_.size() < max_in_flight_) slot_free_.notify_all();
    }
  }
  if (!found) {
    // Request id 0 carries a connection-level error (the daemon closes after it).
    proto::ErrorReply e;
    std::string why;
    if (frame.request_id == 0 && frame.type == static_cast<std::uint8_t>(proto::MsgType::kError) &&
        proto::decode_error(frame.payload, e, why)) {
      lose("the daemon reported: " + e.message, gen);
    } else {
      lose("reply for unknown request id " + std::to_string(frame.request_id), gen);
    }
    return false;
  }
  if (!done.claim() && frame.type == static_cast<std::uint8_t>(proto::MsgType::kOk)) {
    roll_back_abandoned(frame.request_id, gen);
  }
  done.complete(frame);
  return true;
}

// The daemon granted a BEGIN whose caller gave up waiting (wait_begin). Nobody owns that
// transaction: roll it back now, so that it holds up no writer.
void MultiplexedClient::Impl::roll_back_abandoned(std::uint64_t transaction, std::uint64_t gen) {
  try {
    submit(
        [transaction](std::vector<std::uint8_t>& out, std::uint64_t id) {
          proto::encode_transaction_end(out, proto::MsgType::kRollback, id, transaction);
        },
        detail::Completion(detail::Completion::Kind::kEmpty, proto::MsgType::kOk,
                           std::promise<void>()),
        gen, false,
        CallBound{std::chrono::milliseconds(0), std::chrono::steady_clock::time_point::max()});
  } catch (...) {  // the connection is gone or closed: the daemon rolls back by itself
  }
}

// Connection `gen` is gone: fail everything waiting, promptly.
void MultiplexedClient::Impl::lose(const std::string& why, std::uint64_t gen) {
  std::optional<Pending> failed;
  {
    std::lock_guard lk(mu_);
    if (state_ != State::kOpen || gen != generation_) return;  // closed, lost, or an old one
    state_ = State::kLost;
    lost_reason_ = why;  // the first reason: a failed read afterwards does not replace it
    outbox_.clear();     // never sent on a later connection: those calls fail below
    next_attempt_ = {};
    retire_conn();  // wakes a reader; the descriptor is closed with the last reference
    // Taken in the same critical section that marks the loss: once mu_ is released another
    // thread may reconnect and send, and its requests (pending on the new connection) must not
    // be failed here (a probe held this thread between two sections: the new connection's
    // replies then came for ids no longer pending, which dropped it too).
    failed.emplace(take_all_pending());
  }
  fail_taken(
      *failed,
      [](const std::string& what) { return std::make_exception_ptr(ConnectionLostError(what)); },
      "the connection to pasyn-writerd at " + path_ + " was lost (" + why +
          "); the outcome of requests in flight is unknown");
}

void MultiplexedClient::Impl::fail_all(std::exception_ptr (*make)(const std::string&),
                                       const std::string& what) {
  std::optional<Pending> failed;
  {
    std::lock_guard lk(mu_);
    failed.emplace(take_all_pending());
  }
  fail_taken(*failed, make, what);
}

MultiplexedClient::Impl::Pending MultiplexedClient::Impl::take_all_pending() noexcept {
  Pending taken(std::move(pending_));  // allocates nothing
  pending_.clear();
  while (followers_head_) unlist(*followers_head_);  // all of them are failed by the caller
  slot_free_.notify_all();
  return taken;
}

void MultiplexedClient::Impl::fail_taken(Pending& taken,
                                         std::exception_ptr (*make)(const std::string&),
                                         const std::string& what) {
  for (auto& [id, done] : taken) done.fail(make(what));
}

}  // namespace pasyn
