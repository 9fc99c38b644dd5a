// Dispatcher: completes pasyn_sqlite.aio's awaitables from the C++ side, without a thread pool.
#pragma once

#include <nanobind/nanobind.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <exception>
#include <future>
#include <map>
#include <memory>
#include <mutex>
#include <thread>
#include <utility>
#include <vector>

namespace pasyn::python {

/// Hands the outcome of each asynchronous request to its Python callback, `callback(value,
/// error)`, which pasyn_sqlite.aio turns into `loop.call_soon_threadsafe(...)`.
///
/// One completion thread per client (not per call, no pool). Requests are grouped in lanes whose
/// replies come in the order the requests were sent: lane 0 holds the client's own requests
/// (BEGIN included), and every transaction opened by begin_async() has a lane of its own, since
/// the daemon answers a transaction's requests at once while it holds the client's other writes
/// back until the transaction ends. The thread delivers whatever is ready at the front of any
/// lane, taking the GIL once per batch. While no asynchronous transaction is open every lane
/// completes without Python's help, and the thread sleeps on a reply; while one is open it looks
/// at every lane each millisecond, so a transaction's replies never wait behind the writes it
/// holds back.
///
/// Thread-safety: submit() from any thread holding the GIL; stop() with the GIL (it releases it
/// while it joins). Callbacks run with the GIL on the completion thread and must not block.
class Dispatcher {
 public:
  /// One awaited request: its future, and how its value becomes a Python object.
  class Pending {
   public:
    virtual ~Pending() = default;
    /// True once the outcome is there (waits at most `timeout`).
    virtual bool wait_for(std::chrono::microseconds timeout) = 0;
    virtual void wait() = 0;
    /// REQUIRES: the GIL, the outcome there. The value, or throws the request's exception.
    virtual nanobind::object take() = 0;
  };

  using MakeError = nanobind::object (*)(std::exception_ptr);

  explicit Dispatcher(MakeError make_error);
  ~Dispatcher();
  Dispatcher(const Dispatcher&) = delete;
  Dispatcher& operator=(const Dispatcher&) = delete;

  /// Queues `pending` in `lane` (0: the client's own requests; else a transaction's number).
  void submit(std::uint64_t lane, std::unique_ptr<Pending> pending, nanobind::object callback);

  /// When set (process-wide, with the GIL): each batch of outcomes goes to one call
  /// `hook([(callback, value, error), ...])` instead of one call per callback, so that
  /// pasyn_sqlite.aio wakes each event loop once per batch rather than once per reply.
  static void set_batch_hook(nanobind::object hook);

  /// How many asynchronous transactions are open or being opened; shared with their handles,
  /// which count themselves out once finished.
  const std::shared_ptr<std::atomic<int>>& open_transactions() const { return open_; }

  /// True once stop() was called on the completion thread itself (from a callback): the thread
  /// was detached and still runs in this object, which its owner must then leave alive (leak).
  bool detached() const { return detached_.load(); }

  /// Delivers what is queued, then ends the thread. Idempotent. On the completion thread itself
  /// it cannot join: the thread is detached (see detached()), and ends once its callback returns.
  void stop();

 private:
  struct Item {
    std::unique_ptr<Pending> pending;
    nanobind::object callback;
  };

  std::atomic<bool> detached_{false};
  void run();
  // REQUIRES: mu_. Moves the ready fronts of every lane into `batch`.
  void take_ready(std::vector<Item>& batch);
  void deliver(std::vector<Item>& batch);

  const MakeError make_error_;
  const std::shared_ptr<std::atomic<int>> open_ = std::make_shared<std::atomic<int>>(0);
  std::mutex mu_;
  std::condition_variable cv_;
  std::map<std::uint64_t, std::deque<Item>> lanes_;  // GUARDED_BY(mu_)
  std::size_t queued_ = 0;                           // GUARDED_BY(mu_)
  bool stopping_ = false;                            // GUARDED_BY(mu_)
  std::thread thread_;
};

/// A Pending over `future`, whose value `convert(T&&)` (or `convert()` for void) turns into a
/// Python object with the GIL held.
template <typename T, typename Convert>
std::unique_ptr<Dispatcher::Pending> make_pending(std::future<T> future, Convert convert) {
  class Impl final : public Dispatcher::Pending {
   public:
    Impl(std::future<T> f, Convert c) : future_(std::move(f)), convert_(std::move(c)) {}
    bool wait_for(std::chrono::microseconds timeout) override {
      return future_.wait_for(timeout) == std::future_status::ready;
    }
    void wait() override { future_.wait(); }
    nanobind::object take() override {
      if constexpr (std::is_void_v<T>) {
        future_.get();
        return convert_();
      } else {
        return convert_(future_.get());
      }
    }

   private:
    std::future<T> future_;
    Convert convert_;
  };
  return std::make_unique<Impl>(std::move(future), std::move(convert));
}

}  // namespace pasyn::python
