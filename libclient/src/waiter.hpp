// Waiter: where a synchronous call waits for its reply. It lives on the calling thread's stack
// for the length of the call and the pending table points at it (Completion), so a synchronous
// request costs no shared state on the heap, unlike a std::promise/std::future pair.
#pragma once

#include <chrono>
#include <condition_variable>
#include <exception>
#include <mutex>
#include <optional>
#include <utility>

namespace pasyn::detail {

/// The outcome of one synchronous request, set once by whichever thread read the reply (or by
/// the thread failing every pending request) and taken by the calling thread.
///
/// Thread-safety: set_value()/set_exception() once from any thread, concurrently with wait*();
/// get() only after a wait returned true. The setter signals under the waiter's own mutex, so
/// the caller may leave (and destroy the waiter) the moment it sees the outcome.
template <typename T>
class Waiter {
 public:
  Waiter() = default;
  Waiter(const Waiter&) = delete;
  Waiter& operator=(const Waiter&) = delete;

  template <typename... V>
  void set_value(V&&... v) {
    if constexpr (!std::is_void_v<T>) value_.emplace(std::forward<V>(v)...);
    signal();
  }
  void set_exception(std::exception_ptr error) noexcept {
    error_ = std::move(error);
    signal();
  }

  /// Waits until the outcome is set or `timeout` has passed; true if it is set.
  template <typename Rep, typename Period>
  bool wait_for(std::chrono::duration<Rep, Period> timeout) {
    std::unique_lock lk(mu_);
    return done_cv_.wait_for(lk, timeout, [this] { return done_; });
  }
  void wait() {
    std::unique_lock lk(mu_);
    done_cv_.wait(lk, [this] { return done_; });
  }

  /// The value, or throws the error. REQUIRES: a wait returned true.
  T get() {
    if (error_) std::rethrow_exception(error_);
    if constexpr (!std::is_void_v<T>) return std::move(*value_);
  }

 private:
  struct Nothing {};
  void signal() noexcept {
    std::lock_guard lk(mu_);  // notified under the lock: the caller cannot have left yet
    done_ = true;
    done_cv_.notify_one();
  }

  std::mutex mu_;
  std::condition_variable done_cv_;
  bool done_ = false;  // GUARDED_BY(mu_)
  std::conditional_t<std::is_void_v<T>, Nothing, std::optional<T>> value_;
  std::exception_ptr error_;
};

}  // namespace pasyn::detail
