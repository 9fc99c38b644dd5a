// ReplyPoll: whether a lone synchronous caller polls its socket for a while before it sleeps
// waiting for its reply (MultiplexedClient::Impl::lead()).
//
// Why. On a virtual machine a CPU that went idle takes 20-40 us to wake (the halt's exit), and a
// caller sleeping in ppoll() for a reply that the daemon sends ~7 us later from the other CPU
// waits for that wake-up on every call. Polling first keeps its CPU awake: on the 2-core VM
// pasyn is measured on, one caller's sequential INSERTs (synchronous=normal) took 11.4-11.7 us at
// the median instead of 36-42 (5,000 calls; 11 us either way when the caller and the daemon
// share a CPU). The daemon's writer does the same on its side (kLoneSpin in writer.cpp).
//
// When it costs. Polling takes a CPU: from the daemon when it shares the caller's (a poll of
// 50 us on every call made each 112 us instead of 11, measured pinned), from other writers
// under load (16 threads sharing 4 clients at synchronous=normal lost a quarter of their rows/s
// when every call that found its request alone polled for 50 us; 16 threads with a client each
// lost ~15 % when the calls polled while their replies came within 50 us), and for nothing when
// the reply takes longer (synchronous=full: ~200 us). So a call polls only while polling has
// been free:
// * the client's last kLoneStreak calls were lone: each the only request pending from its send
//   to its reply (no other thread of the process is writing through this client);
// * the last call that polled got its reply within kWindow (a hit), and its thread was not
//   switched out against its will meanwhile (the kernel's count of involuntary context switches
//   did not move: nothing else wanted that CPU).
// A miss or a preemption stops polling for kFirstBackoff lone calls, doubled at each further
// one up to kMaxBackoff; then one call polls again to see whether it has become free. kWindow
// is ~2 times the idle round trip measured with polling (11.4 us): longer windows turn the replies
// of a loaded daemon into hits (30 us: 16 threads with a client each polled on 4 % of their calls
// and lost ~5 % of their rows/s; 25 us: 0.15 % of calls, no loss within the noise).
//
// Not thread-safe: the client's mutex guards it.
#pragma once

#include <algorithm>
#include <chrono>

namespace pasyn::detail {

class ReplyPoll {
 public:
  /// The longest a lone caller polls before it sleeps.
  static constexpr std::chrono::microseconds kWindow{25};
  static constexpr unsigned kLoneStreak = 3;
  static constexpr unsigned kFirstBackoff = 1;
  static constexpr unsigned kMaxBackoff = 4096;

  /// A call whose request is the only one pending is about to wait for its reply: true if it
  /// should poll first.
  bool choose() noexcept {
    if (streak_ < kLoneStreak) return false;
    if (skip_ > 0) {
      --skip_;
      return false;
    }
    return true;
  }

  /// A call got its reply; `lone`: its request was the only one pending from send to reply.
  void finished(bool lone) noexcept { streak_ = lone ? std::min(streak_ + 1, kLoneStreak) : 0; }

  /// The outcome of a call that polled: `hit`, its reply came while it polled; `preempted`, its
  /// thread was switched out against its will meanwhile.
  void polled(bool hit, bool preempted) noexcept {
    if (hit && !preempted) {
      backoff_ = kFirstBackoff;
      return;
    }
    skip_ = backoff_;
    backoff_ = std::min(backoff_ * 2, kMaxBackoff);
  }

 private:
  unsigned streak_ = 0;               // consecutive lone calls, up to kLoneStreak
  unsigned skip_ = 0;                 // lone calls left before polling is tried again
  unsigned backoff_ = kFirstBackoff;  // the next skip_ after a miss or a preemption
};

}  // namespace pasyn::detail
