// Waiter: where a synchronous call waits for its reply. It lives on the calling thread's stack
// for the length of the call and the pending table points at it (Completion), so a synchronous
// request costs no shared state on the heap, unlike a std::promise/std::future pair.
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

/// A one-shot event on one futex word: post() once from any thread, wait from one thread. The
/// waiter may destroy the Baton as soon as a wait returns true: post() touches the word only
/// by the atomic exchange, after which it hands its address to the kernel (FUTEX_WAKE of a
/// private futex reads no memory; a wake that lands on a later Baton at the same address is a
/// spurious wake-up, which every wait loop tolerates). One futex wake per reply at most, and
/// none if the caller had not gone to sleep yet (std::mutex + std::condition_variable cost the
/// woken caller a second wait on the mutex its waker still held).
class Baton {
 public:
  void post() noexcept {
    if (state_.exchange(kPosted, std::memory_order_acq_rel) == kSleeping) {
      ::syscall(SYS_futex, word(), FUTEX_WAKE_PRIVATE, 1, nullptr, nullptr, 0);
    }
  }

  /// Waits until posted, or until `deadline` (steady_clock, i.e. CLOCK_MONOTONIC) if given.
  /// True if posted.
  bool wait(const std::chrono::steady_clock::time_point* deadline) noexcept {
    std::uint32_t s = state_.load(std::memory_order_acquire);
    for (;;) {
      if (s == kPosted) return true;
      if (s == kEmpty && !state_.compare_exchange_weak(s, kSleeping, std::memory_order_acquire)) {
        continue;  // posted (or a spurious failure) meanwhile: look again
      }
      timespec until{};
      if (deadline) {
        const auto ns =
            std::chrono::duration_cast<std::chrono::nanoseconds>(deadline->time_since_epoch())
                .count();
        until.tv_sec = static_cast<std::time_t>(ns / 1'000'000'000);
        until.tv_nsec = static_cast<long>(ns % 1'000'000'000);
      }
      // Sleeps only while the word still says kSleeping; an absolute CLOCK_MONOTONIC deadline.
      const long r = ::syscall(SYS_futex, word(), FUTEX_WAIT_BITSET_PRIVATE, kSleeping,
                               deadline ? &until : nullptr, nullptr, FUTEX_BITSET_MATCH_ANY);
      s = state_.load(std::memory_order_acquire);
      if (r == -1 && errno == ETIMEDOUT && s != kPosted) return false;
    }
  }

 private:
  static constexpr std::uint32_t kEmpty = 0;
  static constexpr std::uint32_t kSleeping = 1;
  static constexpr std::uint32_t kPosted = 2;
  static_assert(sizeof(std::atomic<std::uint32_t>) == sizeof(std::uint32_t) &&
                std::atomic<std::uint32_t>::is_always_lock_free);
  std::uint32_t* word() noexcept { return reinterpret_cast<std::uint32_t*>(&state_); }

  std::atomic<std::uint32_t> state_{kEmpty};
};

/// The outcome of one synchronous request, set once by whichever thread read the reply (or by
/// the thread failing every pending request) and taken by the calling thread.
///
/// Thread-safety: set_value()/set_exception() once from any thread, concurrently with wait*();
/// get() only after a wait returned true. The caller may destroy the waiter as soon as a wait
/// returned true (see Baton).
template <typename T>
class Waiter {
 public:
  Waiter() = default;
  Waiter(const Waiter&) = delete;
  Waiter& operator=(const Waiter&) = delete;

  template <typename... V>
  void set_value(V&&... v) {
    if constexpr (!std::is_void_v<T>) value_.emplace(std::forward<V>(v)...);
    done_.post();
  }
  void set_exception(std::exception_ptr error) noexcept {
    error_ = std::move(error);
    done_.post();
  }

  /// Waits until the outcome is set or `timeout` has passed; true if it is set.
  template <typename Rep, typename Period>
  bool wait_for(std::chrono::duration<Rep, Period> timeout) {
    const auto deadline = std::chrono::steady_clock::now() +
                          std::chrono::duration_cast<std::chrono::steady_clock::duration>(timeout);
    return done_.wait(&deadline);
  }
  bool wait_until(std::chrono::steady_clock::time_point deadline) { return done_.wait(&deadline); }
  void wait() { done_.wait(nullptr); }

  /// The value, or throws the error. REQUIRES: a wait returned true.
  T get() {
    if (error_) std::rethrow_exception(error_);
    if constexpr (!std::is_void_v<T>) return std::move(*value_);
  }

 private:
  struct Nothing {};
  Baton done_;
  std::conditional_t<std::is_void_v<T>, Nothing, std::optional<T>> value_;
  std::exception_ptr error_;
};

}  // namespace pasyn::detail
