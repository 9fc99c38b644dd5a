// Asio side of the server: acceptor, sessions, shutdown; the writer thread lives in writer.cpp.
//
// Threading model
// ---------------
// * The I/O thread is the one that calls Server::run(). It alone runs the io_context, which owns
//   the acceptor, every Session (socket reads, frame parsing, the writes the writer thread could
//   not make), the timers and the signal set.
// * The writer thread (Writer) alone owns the read-write sqlite3*. Requests cross from the I/O
//   thread to the writer through Writer::submit (a mutex-guarded queue, one lock per socket
//   read, not per request; the writer is woken only when it sleeps, and while it waits to fill
//   a batch only once the requests it expects are there). Replies do not cross back: the writer
//   thread calls ReplySink::deliver (Session::send) with the encoded frames of one batch for one
//   connection and sends them itself, non-blocking, on the socket's descriptor when no
//   async_write of that connection is in flight; only the rest (the socket was full) is handed
//   to the I/O thread's single async_write, behind which later frames queue. out_mu_ guards
//   that choice, the output queue and the descriptor (close_now closes it under out_mu_), so a
//   direct send never races an async_write or a close. The rest of Session (but its atomic
//   counters and flags) is the I/O thread's.
// * With --writer-io (io_baton.hpp; by default at synchronous=normal) the writer thread runs the
//   io_context itself while it has no batch to run, and the I/O thread stands by in
//   IoBaton::standby(), running it only while the writer is busy for over IoBaton::kStall and,
//   at the end, after the writer finished. Exactly one of the two runs handlers at any time, and
//   each hand-over goes through the baton's mutex, so everything above that says "the I/O
//   thread's" means "whichever thread runs the io_context" there.
// * request_stop() may come from any thread (a handle, a signal, the writer after SHUTDOWN): it
//   posts to the io_context. Shutdown order: stop accepting and refuse new requests, let the
//   writer drain its queue and checkpoint, flush every session's replies, remove the socket.
// * Signals (SIGTERM, SIGINT, SIGHUP) reach the thread that calls Server::run() only (the I/O
//   thread, or with --writer-io the one standing by): it unblocks them when the server is made,
//   and the writer thread (and every thread it starts) is started with them blocked
//   (SignalsBlocked below). Asio's handler only writes to a pipe, which whichever thread runs
//   the io_context reads.
// Files: server_impl.hpp (Server::Impl, the I/O thread's state), session.{hpp,cpp} (one client
// connection: reads, parsing, replies), this file (accept, budgets, stop, STATS, systemd).
#include "server.hpp"

#include <pthread.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <boost/asio/post.hpp>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <memory>
#include <utility>
#include <vector>

#include "admission.hpp"
#include "log.hpp"
#include "paths.hpp"
#include "server_impl.hpp"
#include "session.hpp"
#include "writer.hpp"

namespace pasyn::server {

namespace {

// The database path made absolute, so that STATS (and the `pasyn query` that opens the file
// from another working directory) can use it.
Config with_absolute_database(Config config) {
  std::error_code ec;
  auto path = std::filesystem::absolute(config.database_path, ec);
  if (!ec) config.database_path = path.lexically_normal().string();
  return config;
}

// The signals pasyn-writerd handles: SIGTERM and SIGINT stop it, SIGHUP is logged.
sigset_t handled_signals() {
  sigset_t set;
  sigemptyset(&set);
  for (const int signo : {SIGTERM, SIGINT, SIGHUP}) sigaddset(&set, signo);
  return set;
}

// Blocks the handled signals on the calling thread for its lifetime (the threads it starts
// meanwhile inherit the mask), then restores the mask.
class SignalsBlocked {
 public:
  SignalsBlocked() {
    const sigset_t set = handled_signals();
    ::pthread_sigmask(SIG_BLOCK, &set, &saved_);
  }
  ~SignalsBlocked() { ::pthread_sigmask(SIG_SETMASK, &saved_, nullptr); }
  SignalsBlocked(const SignalsBlocked&) = delete;
  SignalsBlocked& operator=(const SignalsBlocked&) = delete;

 private:
  sigset_t saved_;
};

}  // namespace

Server::Impl::Impl(Config config)
    : config_(with_absolute_database(std::move(config))),
      lock_(std::in_place, config_.database_path, config_.lock_database_file),
      writer_(config_) {
  writer_.attach_feed(feed_);
  // Catch SIGTERM before anyone can connect, so a stop never leaves the socket behind. Then
  // unblocked on this thread, the one that runs run(): a daemon started with them blocked (by a
  // thread of a program that takes its signals with sigwait, say) would leave SIGTERM pending
  // for ever. In this order, a SIGTERM that came while they were blocked (during --lock-wait,
  // say) finds Asio's handler, and stops the daemon as any other does. The writer thread takes
  // none of them (run()).
  if (config_.handle_signals) {
    signals_.emplace(io_, SIGTERM, SIGINT, SIGHUP);
    const sigset_t set = handled_signals();
    ::pthread_sigmask(SIG_UNBLOCK, &set, nullptr);
  }
  error_code ec;
  if (config_.listen_fd >= 0) {  // socket activation: systemd bound and listens already
    const int fd = std::exchange(config_.listen_fd, -1);
    acceptor_.assign(local(), fd, ec);
    if (ec) {
      ::close(fd);
      throw StartError(StartError::Kind::kSocket,
                       "cannot use the socket systemd passed: " + ec.message());
    }
    config_.socket_path = acceptor_.local_endpoint(ec).path();
    socket_passed_ = true;
    return;
  }
  free_socket_path(config_.socket_path);  // under the lock: a stale socket is removed
  const local::endpoint endpoint(config_.socket_path);
  // SPEC §4: 0660 by default, so clients of the daemon's user or the socket's group connect.
  // Nobody may connect before the file has its group and mode: Linux creates the socket file
  // with the socket's own inode mode (less the umask), so that mode is set before bind(), and
  // listen() comes only after chown/chmod (a connect before listen() is refused).
  acceptor_.open(endpoint.protocol(), ec);
  if (!ec && ::fchmod(acceptor_.native_handle(), static_cast<mode_t>(config_.socket_mode)) != 0) {
    ec.assign(errno, boost::system::system_category());
  }
  if (!ec) acceptor_.bind(endpoint, ec);
  if (ec) {
    throw StartError(StartError::Kind::kSocket,
                     "cannot listen on " + config_.socket_path + ": " + ec.message());
  }
  const auto give_up = [&](const std::string& what) {
    const std::string why = std::strerror(errno);
    ::unlink(config_.socket_path.c_str());
    throw StartError(StartError::Kind::kSocket, "cannot " + what + ": " + why);
  };
  if (config_.socket_gid >= 0 && ::chown(config_.socket_path.c_str(), static_cast<uid_t>(-1),
                                         static_cast<gid_t>(config_.socket_gid)) != 0) {
    give_up("give " + config_.socket_path + " to group " + std::to_string(config_.socket_gid));
  }
  if (::chmod(config_.socket_path.c_str(), static_cast<mode_t>(config_.socket_mode)) != 0) {
    give_up("set the mode of " + config_.socket_path);
  }
  acceptor_.listen(asio::socket_base::max_listen_connections, ec);
  if (ec) {
    ::unlink(config_.socket_path.c_str());
    throw StartError(StartError::Kind::kSocket,
                     "cannot listen on " + config_.socket_path + ": " + ec.message());
  }
  ::lstat(config_.socket_path.c_str(), &socket_stat_);
}

bool Server::Impl::check_before_lock() {
  refuse_backup_directory_of_database(config_);
  refuse_wal_without_database(config_.database_path);
  if (config_.listen_fd >= 0) return true;
  if (config_.socket_path.empty()) config_.socket_path = default_socket_path(config_.database_path);
  struct stat st {};
  if (::lstat(config_.socket_path.c_str(), &st) == 0 && !S_ISSOCK(st.st_mode)) {
    free_socket_path(config_.socket_path);  // refuses it, saying why
  }
  return true;
}

void Server::Impl::run() {
  const bool writer_io = config_.writer_runs_io();
  auto start_writer = [this] {
    // Not on the writer thread, nor on the backup threads it starts: Asio installs its handler
    // without SA_RESTART, so one run there would interrupt a system call of SQLite's.
    const SignalsBlocked blocked;
    writer_.start([this] { request_stop(); },
                  [this] { asio::post(io_, [this] { on_writer_drained(); }); });
  };
  if (writer_io) {
    writer_.drive(&baton_);  // started below, once nothing more here can throw
  } else {
    start_writer();
  }
  log().info("serving {} on {} (synchronous={})", config_.database_path, config_.socket_path,
             config_.synchronous_full ? "full" : "normal");
  do_accept();
  if (config_.notify) {
    // The database is open, the writer runs and the acceptor is live: clients may come.
    last_status_ = status_line();
    notify("READY=1\nSTATUS=" + last_status_);
    refresh_status();
    if (config_.watchdog_interval.count() > 0) {
      notify("WATCHDOG=1");
      writer_.made_progress();  // the baseline for the first tick
      watchdog_tick();
    }
  }
  if (signals_) wait_for_signal();
  // With --writer-io the writer thread runs the io_context; this thread stands by, and runs it
  // only while the writer is stuck in its work, then from the writer's end on.
  if (writer_io) {
    start_writer();
    baton_.standby();
  }
  for (;;) {
    try {
      io_.run();
      break;
    } catch (const std::exception& e) {  // a bug, not input: keep serving the others
      log().error("unexpected exception in an I/O handler: {}", e.what());
    }
  }
  writer_.join();
  // The writer publishes no more: let go of the subscribed sessions now, while the I/O context
  // their sockets belong to still exists (feed_ outlives io_).
  feed_.unsubscribe_all();
  remove_socket();  // also when the I/O loop ran out of work before the writer drained
  lock_.reset();    // the database is closed: another server may take it now
  if (auto failure = writer_.storage_failure()) {
    throw StorageError(failure->message, failure->sqlite_code);
  }
  log().info("stopped");
}

void Server::Impl::do_accept() {
  acceptor_.async_accept([this](error_code ec, local::socket socket) {
    if (stopping_ || ec == asio::error::operation_aborted) return;
    if (ec) {
      // EMFILE, ENFILE, ENOBUFS...: the connection stays in the backlog and would be reported
      // again at once; wait a moment instead of spinning (review M5).
      if (accept_errors_.admit(Clock::now())) {
        log().error("accept failed: {}; retrying in 100 ms", ec.message());
      }
      accept_timer_.expires_after(std::chrono::milliseconds(100));
      accept_timer_.async_wait([this](error_code timer_ec) {
        if (!timer_ec && !stopping_) do_accept();
      });
      return;
    }
    // Admission before a byte is read: a refused or over-limit peer gets its ERROR frame and
    // the close, no Session, no slot (PROTOCOL.md §3).
    const Admission admission = admit(config_, socket.native_handle(), sessions_.size());
    if (!admission.admitted()) {
      if (refusals_.admit(Clock::now())) log().warn("{}", admission.log_line);
      send_refusal(socket.native_handle(), admission);
      error_code ignored;
      socket.close(ignored);
    } else {
      const auto id = next_session_id_++;
      auto session = std::make_shared<Session>(*this, std::move(socket), id);
      sessions_.emplace(id, session);
      session->start();
    }
    do_accept();
  });
}

// Bytes were released below --max-total-bytes: every connection paused for it reads again
// (each checks its own limits first).
void Server::Impl::wake_sessions() {
  for (auto& [id, weak] : sessions_) {
    if (auto s = weak.lock()) s->wake();
  }
}

// --max-total-bytes is reached. When clients that do not read their replies hold most of it,
// disconnect the largest of them (rolling back its transaction) until it is not, so that the
// others keep being served; request bytes alone only pause reading (backpressure).
void Server::Impl::shed_unread_replies() {
  budget_.rearm();
  while (budget_.full() && budget_.unsent() >= budget_.limit() / 2) {
    std::shared_ptr<Session> largest;
    std::size_t most = 0;
    for (auto& [id, weak] : sessions_) {
      auto s = weak.lock();
      if (!s) continue;
      if (const std::size_t unsent = s->unsent_bytes(); unsent > most) {
        most = unsent;
        largest = std::move(s);
      }
    }
    if (!largest) break;
    largest->shed(most);
    if (largest->unsent_bytes() != 0) break;  // not released: never loop on the same one
  }
}

// SIGTERM and SIGINT stop the daemon, after its queued work. SIGHUP (a closed terminal, a
// `kill -HUP` meant as "reload") would otherwise kill it at once, without finishing its queued
// work or checkpointing: there is nothing to reload, so it is logged and ignored.
void Server::Impl::wait_for_signal() {
  signals_->async_wait([this](error_code ec, int signo) {
    if (ec) return;
    if (signo == SIGHUP) {
      log().warn("SIGHUP ignored: pasyn-writerd has nothing to reload (SIGTERM stops it)");
      wait_for_signal();
      return;
    }
    begin_stop(signo == SIGTERM ? "SIGTERM" : "SIGINT");
  });
}

void Server::Impl::request_stop() {
  asio::post(io_, [this] { begin_stop("stop requested"); });
}

void Server::Impl::begin_stop(const char* why) {
  if (stopping_) return;
  stopping_ = true;
  log().info("shutting down ({}): finishing queued work", why);
  notify(std::string("STOPPING=1\nSTATUS=shutting down (") + why + "): finishing queued work");
  error_code ignored;
  status_timer_.cancel();
  accept_timer_.cancel();
  acceptor_.close(ignored);
  if (signals_) signals_->cancel(ignored);
  writer_.stop();
  drain_timer_.expires_after(config_.drain_timeout);
  drain_timer_.async_wait([this](error_code ec) {
    if (ec) return;
    log().warn("drain timeout ({} ms) reached: interrupting the writer",
               config_.drain_timeout.count());
    writer_.abort();
  });
}

void Server::Impl::on_writer_drained() {
  drain_timer_.cancel();
  watchdog_timer_.cancel();
  remove_socket();
  // Copy: closing a session erases it from sessions_.
  std::vector<std::shared_ptr<Session>> live;
  for (auto& [id, weak] : sessions_) {
    if (auto s = weak.lock()) live.push_back(std::move(s));
  }
  for (auto& s : live) s->close_after_flush();
}

void Server::Impl::on_session_closed(std::uint64_t id) { sessions_.erase(id); }

void Server::Impl::remove_socket() {
  if (socket_passed_) return;  // systemd's socket: it stays for the next activation
  struct stat st {};
  if (::lstat(config_.socket_path.c_str(), &st) == 0 && st.st_ino == socket_stat_.st_ino &&
      st.st_dev == socket_stat_.st_dev) {
    ::unlink(config_.socket_path.c_str());
  }
}

proto::Report Server::Impl::stats() const {
  const auto w = writer_.stats();
  struct stat wal {};
  const std::int64_t wal_bytes =
      ::stat((config_.database_path + "-wal").c_str(), &wal) == 0 ? wal.st_size : 0;
  const auto i64 = [](auto v) { return static_cast<std::int64_t>(v); };
  const double mean_batch =
      w.batches ? static_cast<double>(w.batched_requests) / static_cast<double>(w.batches) : 0.0;
  proto::Report report{
      {"version", std::string(PASYN_VERSION)},
      {"pid", i64(::getpid())},
      {"database", config_.database_path},
      {"socket", config_.socket_path},
      {"synchronous", std::string(config_.synchronous_full ? "full" : "normal")},
      {"uptime_ms",
       i64(std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - started_).count())},
      {"connections", i64(sessions_.size())},
      {"requests", i64(w.requests)},
      {"batches", i64(w.batches)},
      {"mean_batch_size", mean_batch},
      {"commit_p50_us", i64(w.commit_p50_us)},
      {"commit_p99_us", i64(w.commit_p99_us)},
      {"commit_max_us", i64(w.commit_max_us)},
      {"queue_depth", i64(w.queue_depth)},
      {"waiting_for_transaction", i64(w.waiting)},
      {"transaction_age_ms", i64(w.transaction_age_ms)},
      {"wal_bytes", wal_bytes},
      {"backup_pages_done", w.backup_pages_done},
      {"backup_pages_total", w.backup_pages_total},
  };
  report.emplace_back("batch_waits", i64(w.batch_waits));
  report.emplace_back("batch_bytes_max", i64(w.batch_bytes_max));
  report.emplace_back("held_bytes", i64(budget_.used()));
  report.emplace_back("unsent_bytes", i64(budget_.unsent()));
  report.emplace_back("partial_frame_bytes", i64(partial_bytes_.load(std::memory_order_relaxed)));
  report.emplace_back("writer_backlog", i64(writer_.backlog()));
  report.emplace_back("feed_subscribers", i64(feed_.subscribers()));
  report.emplace_back("feed_last_seq", i64(feed_.last_seq()));
  // In decimal, as a string: epochs use all 64 bits (and `pasyn watch --json` prints it so).
  report.emplace_back("feed_epoch", std::to_string(feed_.epoch()));
  w.batch_size.append_figures(report, "batch_size");
  w.commit_us.append_figures(report, "commit_us");
  w.queue_wait_us.append_figures(report, "queue_wait_us");
  return report;
}

std::string Server::Impl::status_line() const {
  const auto w = writer_.stats();
  std::string line = "serving " + config_.database_path + ": " + std::to_string(sessions_.size()) +
                     " connections, " + std::to_string(w.requests) + " requests in " +
                     std::to_string(w.batches) + " batches, queue " +
                     std::to_string(w.queue_depth + w.waiting);
  if (w.transaction_age_ms >= 0) {
    line += ", transaction open " + std::to_string(w.transaction_age_ms) + " ms";
  }
  return line;
}

void Server::Impl::refresh_status() {
  status_timer_.expires_after(config_.status_interval);
  status_timer_.async_wait([this](error_code ec) {
    if (ec || stopping_) return;
    auto line = status_line();
    if (line != last_status_) {
      notify("STATUS=" + line);
      last_status_ = std::move(line);
    }
    refresh_status();
  });
}

void Server::Impl::watchdog_tick() {
  // Pinged at half the interval (sd_watchdog_enabled(3)); only while the writer moves on, so
  // that a writer stuck in a statement or on a lock gets the service restarted.
  watchdog_timer_.expires_after(config_.watchdog_interval / 2);
  watchdog_timer_.async_wait([this](error_code ec) {
    if (ec) return;
    if (writer_.made_progress()) {
      notify("WATCHDOG=1");
    } else {
      log().warn(
          "watchdog: the writer thread made no progress in the last {} ms; not pinging",
          std::chrono::duration_cast<std::chrono::milliseconds>(config_.watchdog_interval / 2)
              .count());
    }
    watchdog_tick();
  });
}

Server::Server(Config config) : impl_(std::make_unique<Impl>(std::move(config))) {}
Server::~Server() = default;
void Server::run() { impl_->run(); }
void Server::request_stop() { impl_->request_stop(); }
const std::string& Server::socket_path() const noexcept { return impl_->config_.socket_path; }

}  // namespace pasyn::server
