// Waiter: where a synchronous call waits for its reply. It lives on the calling thread's stack
// for the length of the call and the pending table points at it (Completion), so a synchronous
// request costs no shared state on the heap, unlike a std::promise/std::future pair. While it
// waits it may also be handed the client's reader role (see client_impl.hpp): its Baton carries
// that second event, and WaitNode links it into the client's list of waiting callers.
#pragma once

#include <linux/futex.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstdint>
#include <ctime>
#include <exception>
#include <optional>
#include <type_traits>
#include <utility>

namespace pasyn::detail {

/// Events on one futex word, each posted at most once per wait: kDone (the outcome is set, from
/// any thread) and kLead (the waiter is handed the reader role; posted under the client's lock
/// while the waiter is linked in its list, so it is alive). The waiter may destroy the Baton as
/// soon as a wait returned kDone: post() touches the word only by the atomic operation, after
/// which it hands its address to the kernel (FUTEX_WAKE of a private futex reads no memory; a
/// wake that lands on a later Baton at the same address is a spurious wake-up, which every wait
/// loop tolerates). One futex wake per event at most, and none if the waiter had not gone to
/// sleep (std::mutex + std::condition_variable cost the woken caller a second wait on the mutex
/// its waker still held).
class Baton {
 public:
  static constexpr std::uint32_t kDone = 2;
  static constexpr std::uint32_t kLead = 4;

  void post(std::uint32_t event) noexcept {
    if (state_.fetch_or(event, std::memory_order_acq_rel) & kSleeping) {
      ::syscall(SYS_futex, word(), FUTEX_WAKE_PRIVATE, 1, nullptr, nullptr, 0);
    }
  }

  /// Waits until an event is posted, or until `deadline` (steady_clock, i.e. CLOCK_MONOTONIC)
  /// if given. Returns the events posted (kDone and/or kLead), 0 if the deadline passed first.
  std::uint32_t wait(const std::chrono::steady_clock::time_point* deadline) noexcept {
    std::uint32_t s = state_.load(std::memory_order_acquire);
    for (;;) {
      if (s & kEvents) return awake();
      if (!(s & kSleeping)) {
        if (!state_.compare_exchange_weak(s, s | kSleeping, std::memory_order_acquire)) continue;
        s |= kSleeping;
      }
      timespec until{};
      if (deadline) {
        const auto ns =
            std::chrono::duration_cast<std::chrono::nanoseconds>(deadline->time_since_epoch())
                .count();
        until.tv_sec = static_cast<std::time_t>(ns / 1'000'000'000);
        until.tv_nsec = static_cast<long>(ns % 1'000'000'000);
      }
      // Sleeps only while the word is still `s`; an absolute CLOCK_MONOTONIC deadline.
      const long r = ::syscall(SYS_futex, word(), FUTEX_WAIT_BITSET_PRIVATE, s,
                               deadline ? &until : nullptr, nullptr, FUTEX_BITSET_MATCH_ANY);
      const int e = errno;
      s = state_.load(std::memory_order_acquire);
      if (r == -1 && e == ETIMEDOUT && !(s & kEvents)) return awake();
    }
  }

  bool done() const noexcept { return state_.load(std::memory_order_acquire) & kDone; }
  /// Forgets a kLead that was taken (the waiter now reads).
  void clear_lead() noexcept { state_.fetch_and(~kLead, std::memory_order_relaxed); }

 private:
  static constexpr std::uint32_t kSleeping = 1;
  static constexpr std::uint32_t kEvents = kDone | kLead;
  static_assert(sizeof(std::atomic<std::uint32_t>) == sizeof(std::uint32_t) &&
                std::atomic<std::uint32_t>::is_always_lock_free);
  std::uint32_t* word() noexcept { return reinterpret_cast<std::uint32_t*>(&state_); }
  // No longer sleeping: a later post() need not wake anybody. Returns the events posted.
  std::uint32_t awake() noexcept {
    return state_.fetch_and(~kSleeping, std::memory_order_acquire) & kEvents;
  }

  std::atomic<std::uint32_t> state_{0};
};

/// What every Waiter has whatever its value type: its Baton, and its links in the client's list
/// of callers waiting for a reply that another thread reads (GUARDED_BY the client's lock).
struct WaitNode {
  Baton baton;
  WaitNode* prev = nullptr;
  WaitNode* next = nullptr;
  bool linked = false;
};

/// The outcome of one synchronous request, set once by whichever thread read the reply (or by
/// the thread failing every pending request) and taken by the calling thread.
///
/// Thread-safety: set_value()/set_exception() once from any thread, concurrently with wait*();
/// get() only after done(). The caller may destroy the waiter as soon as it is done (see Baton).
template <typename T>
class Waiter : public WaitNode {
 public:
  Waiter() = default;
  Waiter(const Waiter&) = delete;
  Waiter& operator=(const Waiter&) = delete;

  template <typename... V>
  void set_value(V&&... v) {
    if constexpr (!std::is_void_v<T>) value_.emplace(std::forward<V>(v)...);
    baton.post(Baton::kDone);
  }
  void set_exception(std::exception_ptr error) noexcept {
    error_ = std::move(error);
    baton.post(Baton::kDone);
  }

  /// Waits until the outcome is set or the waiter is handed the reader role, or until
  /// `deadline` if given: the events posted (Baton::kDone, Baton::kLead), 0 at the deadline.
  std::uint32_t wait_event(const std::chrono::steady_clock::time_point* deadline) {
    return baton.wait(deadline);
  }
  bool done() const noexcept { return baton.done(); }

  /// The value, or throws the error. REQUIRES: done().
  T get() {
    if (error_) std::rethrow_exception(error_);
    if constexpr (!std::is_void_v<T>) return std::move(*value_);
  }

 private:
  struct Nothing {};
  std::conditional_t<std::is_void_v<T>, Nothing, std::optional<T>> value_;
  std::exception_ptr error_;
};

}  // namespace pasyn::detail
