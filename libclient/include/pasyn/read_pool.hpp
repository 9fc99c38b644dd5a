// ReadPool: read-only connections shared by many reader threads.
#pragma once

#include <chrono>
#include <cstddef>
#include <memory>
#include <string>

#include <pasyn/connection.hpp>
#include <pasyn/export.hpp>

namespace pasyn {

/// Hands out up to `size` connections to `path`, opened on first need with `flags` (read-only
/// by default) and reused.
///
/// Thread-safety: every method may be called from any thread concurrently. A Lease is used by
/// one thread at a time. Ownership: the pool owns its idle connections; a Lease owns its
/// connection until it is destroyed, which returns it (or closes it, once the pool is closed).
/// The pool's state is shared with its leases, so a lease may outlive the pool.
class PASYN_EXPORT ReadPool {
 public:
  /// One connection taken from the pool; returned to it on destruction.
  class PASYN_EXPORT Lease {
   public:
    Lease(Lease&&) noexcept;
    Lease& operator=(Lease&&) noexcept;
    Lease(const Lease&) = delete;
    Lease& operator=(const Lease&) = delete;
    ~Lease();
    Connection& operator*() const noexcept { return *connection_; }
    Connection* operator->() const noexcept { return connection_.get(); }

   private:
    friend class ReadPool;
    struct State;
    Lease(std::shared_ptr<State> pool, std::unique_ptr<Connection> connection);
    std::shared_ptr<State> pool_;
    std::unique_ptr<Connection> connection_;
  };

  /// Throws ProgrammingError if `size` is 0. Opens no connection yet.
  ReadPool(const std::string& path, std::size_t size, OpenFlags flags = OpenFlags::readonly());
  ReadPool(ReadPool&&) noexcept;
  ReadPool& operator=(ReadPool&&) noexcept;
  ReadPool(const ReadPool&) = delete;
  ReadPool& operator=(const ReadPool&) = delete;
  /// Closes the pool (see close()).
  ~ReadPool();

  /// A connection: an idle one, a new one while fewer than `size` exist, or else the first one
  /// returned within `timeout` (zero: wait as long as it takes). Throws PoolClosedError after
  /// close() (also to callers waiting when it happens), PoolError when `timeout` runs out, and
  /// what connect() throws when opening fails.
  Lease acquire(std::chrono::milliseconds timeout = std::chrono::milliseconds(0));
  /// Closes the idle connections; leased ones are closed when returned. Idempotent.
  void close() noexcept;
  bool closed() const noexcept;
  std::size_t size() const noexcept;
  /// Connections currently open (idle and leased).
  std::size_t open_connections() const noexcept;

 private:
  std::shared_ptr<Lease::State> state_;
};

}  // namespace pasyn
