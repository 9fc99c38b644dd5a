// The calling thread's InterruptScope (client.hpp), as the library's waits see it.
#pragma once

#include <pasyn/client.hpp>

#include <chrono>

namespace pasyn {

/// Thread-safety: each thread sees only its own scopes.
struct InterruptAccess {
  /// The innermost scope of the calling thread, or null.
  static const InterruptScope* current() noexcept;
  static std::chrono::milliseconds every(const InterruptScope& s) noexcept { return s.every_; }
  /// Asks the scope's check; true: give up (also when the check throws, which it must not).
  static bool fire(const InterruptScope& s) noexcept {
    try {
      return s.check_(s.context_);
    } catch (...) {
      return true;
    }
  }
};

namespace detail {

/// A wait's next wake-up: `deadline` (null: none), or sooner, the end of the current slice of
/// `scope` (null: no slices). Sets `*sliced` when the slice ends first.
inline const std::chrono::steady_clock::time_point* next_wake(
    const std::chrono::steady_clock::time_point* deadline, const InterruptScope* scope,
    std::chrono::steady_clock::time_point& slice, bool& sliced) {
  sliced = false;
  if (scope == nullptr) return deadline;
  slice = std::chrono::steady_clock::now() + InterruptAccess::every(*scope);
  if (deadline != nullptr && *deadline <= slice) return deadline;
  sliced = true;
  return &slice;
}

}  // namespace detail
}  // namespace pasyn
