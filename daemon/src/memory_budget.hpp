// Byte budgets for what the daemon holds on behalf of clients: the payloads of queued requests
// and the replies not yet written (PROTOCOL.md §7, --max-queued-bytes and --max-total-bytes).
//
// A connection past its own budget, or any connection while the total is reached, is not read
// from (backpressure); clients that do not read their replies are disconnected, largest first,
// when they alone fill the total (server.cpp).
#pragma once

#include <atomic>
#include <cstddef>
#include <functional>
#include <memory>
#include <utility>

namespace pasyn::server {

/// The daemon-wide count of those bytes against --max-total-bytes.
///
/// Thread-safety: every method may be called from any thread; the callbacks run on the thread
/// that calls add() or release() and must only post work (they are called without locks).
class MemoryBudget {
 public:
  /// `on_room`: bytes were released below the limit while someone waited (wait_for_room()).
  /// `on_full`: an add() reached the limit (once until rearm()).
  MemoryBudget(std::size_t limit, std::function<void()> on_room, std::function<void()> on_full)
      : limit_(limit), on_room_(std::move(on_room)), on_full_(std::move(on_full)) {}

  /// `unsent`: reply bytes waiting for a client (the ones shedding can free), not request bytes.
  void add(std::size_t n, bool unsent) {
    if (unsent) unsent_.fetch_add(n);
    if (used_.fetch_add(n) + n >= limit_ && !full_reported_.exchange(true) && on_full_) on_full_();
  }
  void release(std::size_t n, bool unsent) {
    if (unsent) unsent_.fetch_sub(n);
    if (used_.fetch_sub(n) - n < limit_ && waiting_.load() && waiting_.exchange(false) &&
        on_room_) {
      on_room_();
    }
  }
  /// Asks for on_room once bytes are released below the limit. Call, then check full() again.
  void wait_for_room() { waiting_.store(true); }
  /// Lets the next add() at the limit call on_full again.
  void rearm() { full_reported_.store(false); }

  bool full() const { return used_.load() >= limit_; }
  std::size_t used() const { return used_.load(); }
  std::size_t unsent() const { return unsent_.load(); }
  std::size_t limit() const { return limit_; }

 private:
  const std::size_t limit_;
  const std::function<void()> on_room_;
  const std::function<void()> on_full_;
  std::atomic<std::size_t> used_{0};
  std::atomic<std::size_t> unsent_{0};
  std::atomic<bool> waiting_{false};
  std::atomic<bool> full_reported_{false};
};

/// Where a ByteCharge returns its bytes: one connection's account (the Session).
class ByteAccount {
 public:
  /// Any thread.
  virtual void release_bytes(std::size_t n) noexcept = 0;

 protected:
  ~ByteAccount() = default;
};

/// Request bytes charged to a connection from when they are read until the request has been
/// answered and dropped: a queued Request holds one, so the bytes cannot be forgotten.
/// Move-only; releases on destruction (on whichever thread drops the request).
class ByteCharge {
 public:
  ByteCharge() = default;
  ByteCharge(std::shared_ptr<ByteAccount> account, std::size_t bytes)
      : account_(std::move(account)), bytes_(bytes) {}
  ByteCharge(ByteCharge&& other) noexcept
      : account_(std::move(other.account_)), bytes_(std::exchange(other.bytes_, 0)) {}
  ByteCharge& operator=(ByteCharge&& other) noexcept {
    if (this != &other) {
      reset();
      account_ = std::move(other.account_);
      bytes_ = std::exchange(other.bytes_, 0);
    }
    return *this;
  }
  ByteCharge(const ByteCharge&) = delete;
  ByteCharge& operator=(const ByteCharge&) = delete;
  ~ByteCharge() { reset(); }

  void reset() noexcept {
    if (account_ && bytes_ > 0) account_->release_bytes(bytes_);
    account_.reset();
    bytes_ = 0;
  }

 private:
  std::shared_ptr<ByteAccount> account_;
  std::size_t bytes_ = 0;
};

}  // namespace pasyn::server
