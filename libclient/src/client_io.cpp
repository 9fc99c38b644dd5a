// MultiplexedClient::Impl: what moves bytes (client_impl.hpp): sending the outbox from the
// calling thread or the I/O thread, the I/O thread's reads, the replies' delivery, and losing
// the connection.
#include <exception>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "client_impl.hpp"

namespace pasyn {

// Sends the outbox from the calling thread (no hand-off to the I/O thread, which costs a
// wake-up per request when idle). Whatever the socket does not take at once is left to the
// I/O thread. The send happens under mu_, so lose() and close() cannot close the descriptor
// underneath it. REQUIRES: mu_ held, no write scheduled.
void MultiplexedClient::Impl::send_now() {
  const std::size_t sent = proto::send_nonblocking(fd_, outbox_.data(), outbox_.size());
  if (sent == outbox_.size()) {
    outbox_.clear();
    return;
  }
  outbox_.erase(outbox_.begin(), outbox_.begin() + static_cast<std::ptrdiff_t>(sent));
  schedule_write();
}

// Has the I/O thread write the outbox. Leaves nothing scheduled if it throws.
// REQUIRES: mu_ held, no write scheduled.
void MultiplexedClient::Impl::schedule_write() {
  detail::asio::post(io_->context, [self = shared_from_this()] { self->do_write(); });
  write_scheduled_ = true;
}

void MultiplexedClient::Impl::do_write() {
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

void MultiplexedClient::Impl::do_read(std::uint64_t gen) {
  auto space = decoder_.prepare(busy_reads_ ? detail::kLargeRead : detail::kSmallRead);
  offered_ = space.size();
  io_->socket.async_read_some(
      detail::asio::buffer(space.data(), space.size()),
      [self = shared_from_this(), gen](detail::error_code ec, std::size_t n) {
        if (gen != self->generation()) return;  // an old connection
        self->on_read(ec, n, gen);
      });
}

void MultiplexedClient::Impl::on_read(detail::error_code ec, std::size_t n, std::uint64_t gen) {
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

// I/O thread: the connection is gone; fail everything waiting, promptly.
void MultiplexedClient::Impl::lose(const std::string& why) {
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

void MultiplexedClient::Impl::fail_all(std::exception_ptr error) {
  std::optional<Pending> failed;
  {
    std::lock_guard lk(mu_);
    failed.emplace(std::move(pending_));  // keeps the pool; allocates nothing
    pending_.clear();
    slot_free_.notify_all();
  }
  for (auto& [id, done] : *failed) done.fail(error);
  std::lock_guard lk(mu_);  // its nodes go back to the pool, which mu_ guards
  failed.reset();
}

}  // namespace pasyn
