// pasyn::ReadPool: a mutex, a condition variable and a stack of idle connections.
#include <pasyn/read_pool.hpp>

#include <sqlite3.h>
#include <unistd.h>

#include <condition_variable>
#include <mutex>
#include <utility>
#include <vector>

#include "deadline.hpp"

namespace pasyn {

struct ReadPool::Lease::State {
  std::string path;
  std::size_t size = 0;
  OpenFlags flags = OpenFlags::readonly();
  mutable std::mutex mu;
  std::condition_variable returned;
  std::vector<std::unique_ptr<Connection>> idle;  // GUARDED_BY(mu)
  std::size_t open = 0;                           // GUARDED_BY(mu): idle + leased + opening
  bool closed = false;                            // GUARDED_BY(mu)
  pid_t pid = ::getpid();                         // GUARDED_BY(mu): the process `open` counts for

  // In a child after fork() the pool's connections are the parent's: the idle ones unusable
  // here, the leased ones held by the parent's threads, which do not exist here (their leases
  // never come back). The child starts from none: it drops the idle ones (closing one only
  // forgets its handle) and counts none open, and a connection of the parent's given back later
  // is dropped uncounted (give_back). REQUIRES: mu.
  void adopt_after_fork() {
    if (pid == ::getpid()) return;
    pid = ::getpid();
    idle.clear();
    open = 0;
  }

  void give_back(std::unique_ptr<Connection> connection) noexcept {
    std::unique_ptr<Connection> to_close;
    {
      std::lock_guard lk(mu);
      adopt_after_fork();
      if (detail::opened_before_fork(*connection)) {  // the parent's: never counted here
        to_close = std::move(connection);
        return;  // nobody waits for it: it frees no place
      }
      // A connection left inside a read transaction would pin a WAL snapshot, one with an open
      // cursor too (and the cursor's owner could step it while another thread leases it), and
      // a closed pool keeps nothing.
      bool reusable = !closed && !connection->closed() && !detail::has_open_cursors(*connection);
      if (reusable) {
        try {
          reusable = !connection->in_transaction();
        } catch (...) {
          reusable = false;
        }
      }
      if (reusable) {
        idle.push_back(std::move(connection));
      } else {
        to_close = std::move(connection);
        --open;
      }
    }
    returned.notify_one();
    // to_close's destructor closes it outside the lock.
  }
};

ReadPool::Lease::Lease(std::shared_ptr<State> pool, std::unique_ptr<Connection> connection)
    : pool_(std::move(pool)), connection_(std::move(connection)) {}
ReadPool::Lease::Lease(Lease&&) noexcept = default;
ReadPool::Lease& ReadPool::Lease::operator=(Lease&& other) noexcept {
  if (this != &other) {
    if (pool_ && connection_) pool_->give_back(std::move(connection_));
    pool_ = std::move(other.pool_);
    connection_ = std::move(other.connection_);
  }
  return *this;
}
ReadPool::Lease::~Lease() {
  if (pool_ && connection_) pool_->give_back(std::move(connection_));
}

ReadPool::ReadPool(const std::string& path, std::size_t size, OpenFlags flags)
    : state_(std::make_shared<Lease::State>()) {
  if (size == 0) {
    throw ProgrammingError("a ReadPool needs a size of at least 1", SQLITE_MISUSE, SQLITE_MISUSE);
  }
  state_->path = path;
  state_->size = size;
  state_->flags = flags;
}
ReadPool::ReadPool(ReadPool&&) noexcept = default;
ReadPool& ReadPool::operator=(ReadPool&& other) noexcept {
  if (this != &other) {
    close();
    state_ = std::move(other.state_);
  }
  return *this;
}
ReadPool::~ReadPool() { close(); }

ReadPool::Lease ReadPool::acquire(std::chrono::milliseconds timeout) {
  if (!state_) throw PoolClosedError("the pool is closed");
  auto& s = *state_;
  std::unique_lock lk(s.mu);
  const auto deadline = detail::deadline_after(timeout);
  for (;;) {
    if (s.closed) throw PoolClosedError("the pool is closed");
    s.adopt_after_fork();  // a child opens its own (see there)
    if (!s.idle.empty()) {
      auto connection = std::move(s.idle.back());
      s.idle.pop_back();
      return Lease(state_, std::move(connection));
    }
    if (s.open < s.size) {
      ++s.open;  // reserved while opening, outside the lock
      lk.unlock();
      try {
        return Lease(state_, std::make_unique<Connection>(connect(s.path, s.flags)));
      } catch (...) {
        lk.lock();
        --s.open;
        s.returned.notify_one();
        throw;
      }
    }
    if (timeout.count() == 0 || deadline == std::chrono::steady_clock::time_point::max()) {
      s.returned.wait(lk);
    } else if (s.returned.wait_until(lk, deadline) == std::cv_status::timeout && s.idle.empty() &&
               s.open >= s.size && !s.closed) {
      throw PoolError("no connection of the pool became free within " +
                      std::to_string(timeout.count()) + " ms");
    }
  }
}

void ReadPool::close() noexcept {
  if (!state_) return;
  std::vector<std::unique_ptr<Connection>> to_close;
  {
    std::lock_guard lk(state_->mu);
    if (state_->closed) return;
    state_->closed = true;
    to_close = std::move(state_->idle);
    state_->open -= to_close.size();
  }
  state_->returned.notify_all();
}

bool ReadPool::closed() const noexcept {
  if (!state_) return true;
  std::lock_guard lk(state_->mu);
  return state_->closed;
}

std::size_t ReadPool::size() const noexcept { return state_ ? state_->size : 0; }

std::size_t ReadPool::open_connections() const noexcept {
  if (!state_) return 0;
  std::lock_guard lk(state_->mu);
  return state_->open;
}

}  // namespace pasyn
