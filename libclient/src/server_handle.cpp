// start_writer_server: the daemon's server core run on a thread of the calling process.
#include <sqlite3.h>

#include <atomic>
#include <optional>
#include <pasyn/errors.hpp>
#include <pasyn/server.hpp>
#include <thread>

#include "paths.hpp"
#include "process.hpp"
#include "server.hpp"

namespace pasyn {

struct WriterServerHandle::Impl {
  std::unique_ptr<server::Server> server;
  std::thread thread;
  std::string socket_path;
  std::atomic<bool> running{true};
  // The process that started the server. In a forked child the server's threads, sockets, event
  // loop and SQLite handle are the parent's: the handle never touches them there (stopping
  // would write to the event loop and unlink the socket the parent serves).
  const std::uint64_t forks = detail::fork_count();
  bool in_child() const noexcept { return forks != detail::fork_count(); }

  /// In a forked child: gives up the parent's server without touching it (deliberately
  /// leaked). False in the process that started it.
  static bool leave_in_child(std::unique_ptr<Impl>& impl) noexcept {
    if (!impl || !impl->in_child()) return false;
    (void)impl.release();
    return true;
  }

  // Set by the server thread when it stopped on a StorageError; join() reports it once.
  std::optional<OperationalError> failure;
  void join_thread() noexcept {
    if (thread.joinable()) thread.join();
  }
};

WriterServerHandle::WriterServerHandle(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
WriterServerHandle::WriterServerHandle(WriterServerHandle&&) noexcept = default;
WriterServerHandle& WriterServerHandle::operator=(WriterServerHandle&& other) noexcept {
  if (this != &other) {
    if (impl_ && !Impl::leave_in_child(impl_)) {
      shutdown();
      impl_->join_thread();
    }
    impl_ = std::move(other.impl_);
  }
  return *this;
}
WriterServerHandle::~WriterServerHandle() {
  if (impl_ && !Impl::leave_in_child(impl_)) {
    shutdown();
    impl_->join_thread();  // never throws: a failure not collected by join() is dropped
  }
}

const std::string& WriterServerHandle::socket_path() const noexcept {
  static const std::string empty;
  return impl_ ? impl_->socket_path : empty;
}

void WriterServerHandle::shutdown() noexcept {
  if (impl_ && impl_->server && !impl_->in_child()) impl_->server->request_stop();
}

void WriterServerHandle::join() {
  if (impl_ && impl_->in_child()) {
    throw ProgrammingError("this server runs in the parent process; a forked child cannot join it",
                           SQLITE_MISUSE, SQLITE_MISUSE);
  }
  if (!impl_) return;
  impl_->join_thread();
  if (impl_->failure) {
    OperationalError e = std::move(*impl_->failure);
    impl_->failure.reset();
    throw e;
  }
}

void WriterServerHandle::stop() {
  shutdown();
  join();
}

bool WriterServerHandle::running() const noexcept { return impl_ && impl_->running; }

WriterServerHandle start_writer_server(const std::string& database_path,
                                       const std::string& socket_path) {
  ServerOptions options;
  options.socket_path = socket_path;
  return start_writer_server(database_path, options);
}

WriterServerHandle start_writer_server(const std::string& database_path,
                                       const ServerOptions& options) {
  server::Config config;
  config.database_path = database_path;
  config.socket_path = options.socket_path;
  config.synchronous_full = options.synchronous == Synchronous::kFull;
  config.busy_timeout = options.busy_timeout;
  config.max_frame = options.max_frame;
  config.handshake_timeout = options.handshake_timeout;
  config.drain_timeout = options.drain_timeout;
  config.lock_wait = options.lock_wait;
  config.transaction_idle_timeout = options.transaction_idle_timeout;
  config.foreign_keys = options.foreign_keys;
  auto impl = std::make_unique<WriterServerHandle::Impl>();
  // The server's threads (the ones it starts and the one below) take no signals: they belong
  // to the application's threads.
  const detail::AllSignalsBlocked blocked;
  try {
    impl->server = std::make_unique<server::Server>(std::move(config));
  } catch (const server::StartError& e) {
    switch (e.kind()) {
      case server::StartError::Kind::kLocked:
        throw OperationalError(e.what(), SQLITE_BUSY, SQLITE_BUSY);
      case server::StartError::Kind::kDatabase:
        throw OperationalError(e.what(), SQLITE_CANTOPEN, SQLITE_CANTOPEN);
      case server::StartError::Kind::kSocket:
        throw Error(e.what());
    }
    throw Error(e.what());
  }
  impl->socket_path = impl->server->socket_path();
  auto* raw = impl.get();
  impl->thread = detail::start_library_thread([raw] {
    try {
      raw->server->run();
    } catch (const server::StorageError& e) {
      raw->failure.emplace(
          std::string("the writer server stopped: ") + e.what() +
              ". The outcome of the writes of its last batch is unknown (their callers got "
              "ConnectionLostError); reopening the database lets WAL recovery decide",
          e.sqlite_code() & 0xff, e.sqlite_code());
    } catch (...) {  // never terminate the application from a library thread
    }
    raw->running = false;
  });
  return WriterServerHandle(std::move(impl));
}

std::string default_socket_path(const std::string& database_path) {
  try {
    return server::default_socket_path(database_path);
  } catch (const server::StartError& e) {
    throw Error(e.what());
  }
}

}  // namespace pasyn
