// IoBaton: the hand-over of the io_context between the writer and the I/O thread; see the header.
#include "io_baton.hpp"

#include <boost/asio/io_context.hpp>
#include <boost/asio/post.hpp>
#include <exception>
#include <new>

#include "log.hpp"

namespace pasyn::server {
namespace {

std::int64_t now_ns() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(
             IoBaton::Clock::now().time_since_epoch())
      .count();
}

// One handler (or none, when the io_context stopped or `until` passed), then the ready ones, at
// most kMaxHandlers in all: io_context::poll() would go on for as long as a connection keeps
// sending (its reads complete at once, speculatively), and a client flooding PINGs, which are
// answered without the writer, would keep the writer from its batches for as long (review24).
// A handler's exception is a bug, not input: logged, and the others keep being served (as
// Server::run does around io_context::run).
constexpr std::size_t kMaxHandlers = 256;

std::size_t run_handlers(boost::asio::io_context& io, bool wait,
                         std::optional<IoBaton::Clock::time_point> until) {
  std::size_t ran = 0;
  for (;;) {
    try {
      if (wait) {
        wait = false;
        ran += until ? io.run_one_until(*until) : io.run_one();
      }
      while (ran < kMaxHandlers && io.poll_one() != 0) ++ran;
      return ran;
    } catch (const std::exception& e) {
      log().error("unexpected exception in an I/O handler: {}", e.what());
      ++ran;
    }
  }
}

}  // namespace

// The operation of the no-op that take_back() posts lives in the baton's slot_, so that a
// hand-over allocates nothing (the daemon allocates nothing per request in its steady state:
// DaemonAllocTest). One at a time: the writer's next writer_run() polls the io_context, which
// runs a no-op still queued, before another take_back(); a second one would get the heap.
template <typename T>
struct IoBaton::SlotAllocator {
  using value_type = T;
  IoBaton* baton;
  explicit SlotAllocator(IoBaton* b) noexcept : baton(b) {}
  template <typename U>
  SlotAllocator(const SlotAllocator<U>& other) noexcept : baton(other.baton) {}  // NOLINT
  T* allocate(std::size_t n) {
    const std::size_t bytes = n * sizeof(T);
    if (bytes <= sizeof(baton->slot_) && alignof(T) <= alignof(std::max_align_t) &&
        !baton->slot_used_.exchange(true)) {
      return reinterpret_cast<T*>(baton->slot_);
    }
    return static_cast<T*>(::operator new(bytes));
  }
  void deallocate(T* p, std::size_t) noexcept {
    if (reinterpret_cast<unsigned char*>(p) == baton->slot_) {
      baton->slot_used_.store(false);
    } else {
      ::operator delete(p);
    }
  }
  template <typename U>
  bool operator==(const SlotAllocator<U>& other) const noexcept {
    return baton == other.baton;
  }
};

// Ends the I/O thread's wait for a handler (take_back); does nothing itself.
struct IoBaton::Wake {
  IoBaton* baton;
  using allocator_type = SlotAllocator<void>;
  allocator_type get_allocator() const noexcept { return allocator_type(baton); }
  void operator()() const noexcept {}
};

bool IoBaton::writer_run(bool wait, std::optional<Clock::time_point> until) {
  // Stored, then the I/O thread's flag loaded (seq_cst; standby() does the reverse): either the
  // I/O thread sees the writer back and does not take over, or the writer sees it did.
  busy_since_ns_.store(0);
  if (io_thread_holds_.load()) take_back();
  if (io_.stopped()) {
    mark_busy();
    return false;
  }
  run_handlers(io_, wait, until);
  mark_busy();
  return true;
}

void IoBaton::mark_busy() {
  const std::int64_t now = now_ns();
  last_busy_ns_.store(now, std::memory_order_relaxed);
  busy_since_ns_.store(now);
  if (standby_asleep_.load()) {
    std::lock_guard lk(mu_);
    standby_asleep_.store(false);
    cv_.notify_all();
  }
}

void IoBaton::take_back() {
  std::unique_lock lk(mu_);
  io_thread_holds_.store(false);
  if (io_thread_in_) {
    boost::asio::post(io_, Wake{this});  // ends the I/O thread's wait for a handler
    cv_.wait(lk, [&] { return !io_thread_in_; });
  }
}

void IoBaton::writer_done() {
  std::lock_guard lk(mu_);
  writer_done_ = true;
  cv_.notify_all();
}

void IoBaton::standby() {
  std::unique_lock lk(mu_);
  for (;;) {
    io_thread_holds_.store(false);
    io_thread_in_ = false;
    cv_.notify_all();  // a writer waiting in take_back()
    // Wait for the writer's end, or for it to stay away from the io_context for kStall.
    for (;;) {
      if (writer_done_) {
        io_thread_holds_.store(true);
        io_thread_in_ = true;
        return;
      }
      const std::int64_t since = busy_since_ns_.load();
      if (since == 0 && now_ns() - last_busy_ns_.load(std::memory_order_relaxed) < kQuiet) {
        // The writer is in the io_context, but was at work lately: look again in kStall, rather
        // than be woken by its next mark_busy() (a futex wake for every batch of a lone caller
        // cost the idle round trip ~20 us).
        cv_.wait_for(lk, kStall);
        continue;
      }
      if (since == 0) {  // the writer has been waiting for requests for kQuiet: sleep until it
                         // leaves for work (mark_busy() wakes us)
        standby_asleep_.store(true);
        if (busy_since_ns_.load() != 0) {  // it left meanwhile: its mark_busy() may not see us
          standby_asleep_.store(false);
          continue;
        }
        cv_.wait(lk);
        standby_asleep_.store(false);
        continue;
      }
      const auto due = Clock::time_point(std::chrono::nanoseconds(since)) + kStall;
      if (Clock::now() < due) {
        cv_.wait_until(lk, due);
        continue;
      }
      // The writer has been away for kStall: take over, unless it is just coming back.
      io_thread_holds_.store(true);
      if (busy_since_ns_.load() == since) break;
      io_thread_holds_.store(false);
    }
    io_thread_in_ = true;
    lk.unlock();
    while (io_thread_holds_.load()) {
      if (run_handlers(io_, true, std::nullopt) == 0 && io_.stopped()) break;
    }
    lk.lock();
    if (writer_done_) return;  // the caller runs the io_context to its end
    if (io_thread_holds_.load()) {
      // The io_context stopped under the I/O thread (the server ran out of work before the
      // writer ended): nothing more to run here; wait for the writer's end.
      io_thread_in_ = false;
      cv_.notify_all();
      cv_.wait(lk, [&] { return writer_done_; });
      io_thread_in_ = true;
      return;
    }
    // The writer took the io_context back (take_back): stand by again.
  }
}

}  // namespace pasyn::server
