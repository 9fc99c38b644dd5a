// Server::Impl: the I/O thread's state (acceptor, sessions, budgets, timers), shared by
// server.cpp (accept, stop, STATS), session.cpp and session_frames.cpp (the connections). The
// threading model is described at the top of server.cpp.
#pragma once

#include <sys/stat.h>

#include <atomic>
#include <boost/asio/io_context.hpp>
#include <boost/asio/local/stream_protocol.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/signal_set.hpp>
#include <boost/asio/steady_timer.hpp>
#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <unordered_map>

#include <pasyn/proto/codec.hpp>

#include "config.hpp"
#include "log.hpp"
#include "memory_budget.hpp"
#include "paths.hpp"
#include "server.hpp"
#include "writer.hpp"

namespace pasyn::server {

namespace asio = boost::asio;
using boost::system::error_code;
using local = asio::local::stream_protocol;

class Session;

class Server::Impl {
 public:
  explicit Impl(Config config);
  // What can refuse a start before the lock (which creates a missing database file): a
  // --backup-dir that is the database's own directory, and a socket path that exists and is
  // not a socket (StartError). Sets the default socket path if none was given (nothing to do
  // for a socket systemd passed). Returns true.
  bool check_before_lock();
  void run();
  void request_stop();
  void wait_for_signal();
  void on_session_closed(std::uint64_t id);
  void wake_sessions();
  void shed_unread_replies();

  Config config_;
  /// I/O thread (read by STATS): the bytes of frames in progress over all connections
  /// (Session::note_partial_frame).
  std::atomic<std::size_t> partial_bytes_{0};
  /// Queued request and unsent reply bytes of every connection (--max-total-bytes). Declared
  /// before the writer, whose queued requests return their bytes here when destroyed.
  MemoryBudget budget_{config_.max_total_bytes,
                       [this] { asio::post(io_, [this] { wake_sessions(); }); },
                       [this] { asio::post(io_, [this] { shed_unread_replies(); }); }};
  // The start's paths are judged before the lock (which creates a missing database file to lock
  // it): a start refused for them leaves no new database behind. A socket there is judged under the
  // lock (the constructor's free_socket_path, which removes a stale one).
  const bool socket_path_checked_ = check_before_lock();
  std::optional<LockFile> lock_;  // held from construction until run() has stopped
  // The change feed's commits and subscribers: declared before the writer, which publishes to
  // it, and the sessions, which subscribe.
  FeedHub feed_{config_.feed_history, config_.max_output / 2};
  Writer writer_;
  // I/O thread: the requests Session::pump_once() parses from the socket, kept from one call to
  // the next so that its buffer (which Writer::submit() exchanges with the writer's queue, and
  // the queue with the writer's) circulates instead of being allocated per read. Empty outside
  // pump_once().
  std::vector<Request> parsed_;
  // I/O thread: payload buffers the writer has finished with (Writer::submit), for the next
  // requests parsed (Session::handle_frame takes them from the back).
  Writer::PayloadBuffers spare_payloads_;
  // I/O thread: the payload `f` into `payload` (empty), in a spare buffer if there is one (one
  // too small grows: a pool of small ones must not get stuck behind it).
  void copy_payload(std::span<const std::uint8_t> f, std::vector<std::uint8_t>& payload) {
    if (!spare_payloads_.empty()) {
      payload.swap(spare_payloads_.back());
      spare_payloads_.pop_back();
    }
    payload.assign(f.begin(), f.end());
  }
  // Which thread runs io_ when the writer drives the I/O (--writer-io; io_baton.hpp). Declared
  // before io_, whose destruction frees a hand-back's no-op still queued into the baton's slot.
  IoBaton baton_{io_};
  asio::io_context io_{1};
  local::acceptor acceptor_{io_};
  asio::steady_timer accept_timer_{io_};  // the back-off after a failed accept (EMFILE, ...)
  std::optional<asio::signal_set> signals_;
  asio::steady_timer drain_timer_{io_};
  asio::steady_timer status_timer_{io_};
  asio::steady_timer watchdog_timer_{io_};
  const Clock::time_point started_ = Clock::now();
  std::string last_status_;
  bool socket_passed_ = false;  // the socket came from the service manager: not ours to unlink
  std::unordered_map<std::uint64_t, std::weak_ptr<Session>> sessions_;
  std::uint64_t next_session_id_ = 1;
  bool stopping_ = false;
  struct stat socket_stat_ {};

  /// At most `burst` lines per second for one kind of event, so that a local client sending
  /// malformed frames or opening connections in a loop cannot flood the log; how many were left
  /// out is logged (a warning) with the next one admitted. I/O thread only.
  class LogLimiter {
   public:
    /// `level`: the level of the lines it limits (and of its count of those left out). At a
    /// --log-level that drops them, admit() says no and counts nothing.
    explicit LogLimiter(const char* what, int burst = 10,
                        spdlog::level::level_enum level = spdlog::level::warn)
        : what_(what), burst_(burst), level_(level) {}
    bool admit(Clock::time_point now) {
      if (!log().should_log(level_)) return false;
      if (now - window_ >= std::chrono::seconds(1)) {
        if (suppressed_ > 0) {
          log().log(level_, "{} more {} in the last second were not logged", suppressed_, what_);
        }
        window_ = now;
        in_window_ = suppressed_ = 0;
      }
      if (in_window_ < burst_) {
        ++in_window_;
        return true;
      }
      ++suppressed_;
      return false;
    }

   private:
    const char* what_;
    int burst_;
    spdlog::level::level_enum level_;
    Clock::time_point window_{};
    int in_window_ = 0;
    std::uint64_t suppressed_ = 0;
  };
  LogLimiter protocol_errors_{"protocol errors"};
  LogLimiter connection_lines_{"connections opened", 50, spdlog::level::info};
  LogLimiter read_errors_{"failed reads of connections"};
  LogLimiter write_errors_{"failed writes to connections", 10, spdlog::level::info};
  LogLimiter refusals_{"refused connections"};
  LogLimiter accept_errors_{"accept errors", 1, spdlog::level::err};

  /// STATS: the server's and the writer's figures (PROTOCOL.md §5).
  proto::Report stats() const;

 private:
  void notify(const std::string& state) const {
    if (config_.notify) config_.notify(state);
  }
  std::string status_line() const;
  void refresh_status();
  void watchdog_tick();
  void do_accept();
  void begin_stop(const char* why);
  void on_writer_drained();
  void remove_socket();
};

}  // namespace pasyn::server
