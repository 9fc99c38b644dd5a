// What the library's objects need to know about the process they live in: whether it is a
// child forked since they were created, and how to start a thread no signal is delivered to.
#pragma once

#include <signal.h>

#include <cstdint>
#include <functional>
#include <thread>

namespace pasyn::detail {

/// How many fork()s separate this process from the one that loaded the library: 0 there, one
/// more in each child (counted by a pthread_atfork child handler). An object that recorded it
/// at creation and reads another value now is in a forked child: it must not touch the
/// parent's sockets, threads, event loops or SQLite handles, even to close them.
std::uint64_t fork_count() noexcept;

/// Blocks every signal on the calling thread for its lifetime, then restores the mask.
class AllSignalsBlocked {
 public:
  AllSignalsBlocked() noexcept;
  ~AllSignalsBlocked();
  AllSignalsBlocked(const AllSignalsBlocked&) = delete;
  AllSignalsBlocked& operator=(const AllSignalsBlocked&) = delete;

 private:
  sigset_t saved_;
};

/// Starts a library thread with every signal blocked, so that process-directed signals go to
/// the application's threads (sigwait/signalfd users), and so do the threads it starts.
/// Throws pasyn::Error if the thread cannot be created.
std::thread start_library_thread(std::function<void()> body);

}  // namespace pasyn::detail
