// fork() generations and signal-free library threads (see process.hpp).
#include "process.hpp"

#include <pthread.h>

#include <atomic>
#include <mutex>
#include <pasyn/errors.hpp>
#include <system_error>

namespace pasyn::detail {
namespace {

std::atomic<std::uint64_t> g_forks{0};

void count_fork_in_child() noexcept { g_forks.fetch_add(1, std::memory_order_relaxed); }

// Registered when the library is loaded, before any of its objects can exist.
[[maybe_unused]] const int g_registered = ::pthread_atfork(nullptr, nullptr, &count_fork_in_child);

}  // namespace

AllSignalsBlocked::AllSignalsBlocked() noexcept {
  sigset_t all;
  sigfillset(&all);
  ::pthread_sigmask(SIG_BLOCK, &all, &saved_);
}

AllSignalsBlocked::~AllSignalsBlocked() { ::pthread_sigmask(SIG_SETMASK, &saved_, nullptr); }

std::uint64_t fork_count() noexcept { return g_forks.load(std::memory_order_relaxed); }

std::thread start_library_thread(std::function<void()> body) {
  AllSignalsBlocked blocked;  // the new thread inherits the mask
  try {
    return std::thread(std::move(body));
  } catch (const std::system_error& e) {
    throw Error(std::string("cannot start a pasyn thread: ") + e.what());
  }
}

}  // namespace pasyn::detail
