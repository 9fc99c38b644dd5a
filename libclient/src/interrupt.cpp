// InterruptScope (client.hpp): a thread-local stack of the calling thread's scopes.
#include "interrupt.hpp"

#include <algorithm>

namespace pasyn {
namespace {
thread_local const InterruptScope* t_innermost = nullptr;
}  // namespace

InterruptScope::InterruptScope(bool (*check)(void*), void* context,
                               std::chrono::milliseconds every) noexcept
    : check_(check),
      context_(context),
      // At least 1 ms, at most a day (now() + every must not overflow the clock).
      every_(std::clamp(every, std::chrono::milliseconds(1),
                        std::chrono::milliseconds(std::chrono::hours(24)))),
      outer_(t_innermost) {
  t_innermost = this;
}

InterruptScope::~InterruptScope() { t_innermost = outer_; }

const InterruptScope* InterruptAccess::current() noexcept { return t_innermost; }

}  // namespace pasyn
