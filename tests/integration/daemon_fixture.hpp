// Shared pieces of the integration tests: temporary directories, child processes, a raw
// protocol peer, an sd_notify listener, and DaemonTest, the fixture that runs the real
// pasyn-writerd binary.
//
// Every wait here is bounded, so a misbehaving daemon fails a test instead of hanging the suite,
// and every process or directory a test creates is removed by a destructor.
#pragma once

#include <gtest/gtest.h>
#include <sys/types.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <filesystem>
#include <functional>
#include <map>
#include <mutex>
#include <optional>
#include <pasyn/pasyn.hpp>
#include <pasyn/proto/codec.hpp>
#include <pasyn/proto/unix_socket.hpp>
#include <string>
#include <string_view>
#include <thread>
#include <utility>
#include <vector>

namespace pasyn::itest {

using Clock = std::chrono::steady_clock;
using namespace std::chrono_literals;

inline constexpr auto kStartTimeout = 10s;
inline constexpr auto kStopTimeout = 20s;
inline constexpr auto kReplyTimeout = 5s;

/// The whole content of a file ("" if it cannot be read).
std::string read_file(const std::string& path);
/// Each thread of process `pid` (by thread id) with the lines of its /proc status that start
/// with `prefix` ("" for all of them); empty if `pid` is gone.
std::vector<std::pair<pid_t, std::vector<std::string>>> thread_status(pid_t pid,
                                                                      std::string_view prefix);
/// True if something (of any type, even a dangling link) is at `path`.
bool path_exists(const std::string& path);
/// "exit status 1", "killed by Killed", ... for a waitpid status.
std::string describe_status(int status);
bool exited_with(int status, int code);
/// Waits (bounded) until the file at `path` contains `text`.
::testing::AssertionResult wait_for_file_content(const std::string& path, const std::string& text,
                                                 Clock::duration timeout);

/// A fresh directory under /tmp, removed with its content by the destructor.
class TempDir {
 public:
  TempDir();
  ~TempDir();
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  std::string file(const std::string& name) const { return (path_ / name).string(); }
  const std::filesystem::path& path() const { return path_; }

 private:
  std::filesystem::path path_;
};

/// A child process started with fork/exec; killed (SIGKILL) and reaped by the destructor if the
/// test did not wait for it, so no test leaves a process behind.
///
/// Thread-safety: none; use from the thread that owns it.
class Process {
 public:
  Process() = default;
  Process(const Process&) = delete;
  Process& operator=(const Process&) = delete;
  Process(Process&& other) noexcept : pid_(std::exchange(other.pid_, -1)) {}
  ~Process();

  /// Runs `args` (args[0] is the binary) with stdout and stderr appended to the given files,
  /// in this process's environment plus `env` ("NAME=value" entries, replacing any inherited
  /// variable of the same name).
  void spawn(const std::vector<std::string>& args, const std::string& out_path,
             const std::string& err_path, const std::vector<std::string>& env = {});

  /// Takes over a child this process forked itself: waited for, or killed by the destructor.
  void adopt(pid_t pid) { pid_ = pid; }

  bool running() const { return pid_ > 0; }
  pid_t pid() const { return pid_; }
  void signal(int signo) const;

  /// The wait status once the process has exited, or nullopt if it is still running after
  /// `timeout`.
  std::optional<int> wait_exit(Clock::duration timeout);

  /// wait_exit(timeout), then SIGKILL as a last resort (after printing each thread's signal
  /// masks, and its stack with gdb when installed, to stderr); returns the status and whether
  /// it had to be killed.
  std::pair<int, bool> wait_or_kill(Clock::duration timeout);

 private:
  pid_t pid_ = -1;
};

/// What a command run to completion left behind.
struct Completed {
  int status = -1;      // the wait status
  bool killed = false;  // it had to be killed after the timeout
  std::string out;      // its stdout
  std::string err;      // its stderr
};

/// Runs `args` to completion (bounded by `timeout`), stdout and stderr captured in files under
/// `dir`.
Completed run_to_completion(const std::vector<std::string>& args, const TempDir& dir,
                            const std::vector<std::string>& env = {},
                            Clock::duration timeout = 30s);

/// A connected AF_UNIX stream socket, or -1 (the proto library's, shared with the bench).
using proto::connect_unix;

/// Receives what a daemon sends to $NOTIFY_SOCKET (sd_notify(3)): binds a datagram socket at
/// `path` and collects every datagram, with its arrival time, on a thread of its own.
///
/// Thread-safety: all methods may be called from any thread.
class NotifyListener {
 public:
  struct Message {
    Clock::time_point at;
    std::string text;  // "READY=1\nSTATUS=...", one or more NAME=value lines
    /// True when one of its lines starts with `prefix` ("READY=1", "STATUS=serving ").
    bool has(std::string_view prefix) const;
  };

  explicit NotifyListener(std::string path);
  ~NotifyListener();
  NotifyListener(const NotifyListener&) = delete;
  NotifyListener& operator=(const NotifyListener&) = delete;

  const std::string& path() const { return path_; }
  /// "NOTIFY_SOCKET=<path>", for Process::spawn's environment.
  std::string env() const { return "NOTIFY_SOCKET=" + path_; }

  /// Every message so far, in arrival order.
  std::vector<Message> messages() const;
  /// Waits (bounded) until a message satisfies `pred` and returns the first that does. `pred`
  /// sees each message once, in arrival order, so it may count.
  std::optional<Message> wait_for(const std::function<bool(const Message&)>& pred,
                                  Clock::duration timeout) const;
  /// Shorthand: waits for a message that has a line starting with `prefix`.
  std::optional<Message> wait_for(std::string_view prefix, Clock::duration timeout) const;
  /// The messages that have a line starting with `prefix` and arrived in [from, to).
  std::vector<Message> between(std::string_view prefix, Clock::time_point from,
                               Clock::time_point to) const;

 private:
  void receive();

  std::string path_;
  int fd_ = -1;
  std::atomic<bool> stop_{false};
  mutable std::mutex mu_;
  mutable std::condition_variable cv_;
  std::vector<Message> messages_;  // GUARDED_BY(mu_)
  std::thread thread_;
};

struct Frame {
  std::uint8_t type = 0;
  std::uint64_t request_id = 0;
  std::vector<std::uint8_t> payload;
};

/// A hand-driven protocol peer on a raw socket: sends arbitrary bytes, reads frames with
/// timeouts, and tells when the daemon closed the connection.
class RawPeer {
 public:
  explicit RawPeer(const std::string& path) : fd_(connect_unix(path)) {}
  ~RawPeer() { close(); }
  RawPeer(const RawPeer&) = delete;
  RawPeer& operator=(const RawPeer&) = delete;

  bool connected() const { return fd_ >= 0; }
  /// The daemon closed the connection (EOF or reset seen by a read).
  bool closed() const { return closed_; }
  bool send(const std::vector<std::uint8_t>& bytes);
  /// Shuts the sending side only (shutdown(SHUT_WR)): the daemon reads EOF, we can still read.
  void shutdown_send();
  void close();

  /// Sends a good HELLO and waits for HELLO_OK.
  ::testing::AssertionResult handshake();

  /// The next frame, or nullopt if none arrived within `timeout` or the connection closed.
  std::optional<Frame> read_frame(Clock::duration timeout);

  /// Sends one request and returns the next frame (nullopt if none within `timeout`).
  std::optional<Frame> request(const std::vector<std::uint8_t>& frame,
                               Clock::duration timeout = kReplyTimeout);

  struct UntilClosed {
    std::vector<Frame> frames;  // every frame received meanwhile
    bool closed = false;        // EOF (or reset) seen before the timeout
    std::string decode_error;   // non-empty if the bytes were not valid frames
    Clock::duration elapsed{};
  };

  /// Reads until the daemon closes the connection or `timeout` passes.
  UntilClosed read_until_closed(Clock::duration timeout);

 private:
  // One bounded read; false on timeout or once the connection is closed.
  bool read_some(Clock::time_point deadline);

  int fd_;
  proto::FrameDecoder decoder_;
  std::deque<Frame> frames_;
  bool closed_ = false;
  std::string decode_error_;
};

// ---- Frame helpers ----------------------------------------------------------------------------

/// A frame with an empty payload (PING, BEGIN, COMMIT, ROLLBACK, ...).
std::vector<std::uint8_t> empty_frame(proto::MsgType type, std::uint64_t request_id);
/// A statement frame of any type byte, e.g. 0x43 (EXECUTE with the transaction bit).
std::vector<std::uint8_t> statement_frame(std::uint8_t type, std::uint64_t request_id,
                                          std::string_view sql, const Params& params = {});
std::vector<std::uint8_t> little_endian_u32(std::uint32_t v);
/// A statement frame of base type `type` inside transaction number `transaction` (the request
/// id of its BEGIN): the transaction bit set and the number before the payload.
std::vector<std::uint8_t> tx_statement_frame(proto::MsgType type, std::uint64_t request_id,
                                             std::uint64_t transaction, std::string_view sql,
                                             const Params& params = {});
/// COMMIT or ROLLBACK of transaction number `transaction`.
std::vector<std::uint8_t> tx_end_frame(proto::MsgType type, std::uint64_t request_id,
                                       std::uint64_t transaction);

/// Asserts that `frame` is an ERROR for `request_id` in `domain` with `code`; returns its
/// decoded content through `out` when given.
::testing::AssertionResult is_error(const std::optional<Frame>& frame, std::uint64_t request_id,
                                    proto::ErrorDomain domain, proto::PasynCode code,
                                    proto::ErrorReply* out = nullptr);

/// Asserts that the daemon answered with exactly one ERROR frame (request id 0, domain pasyn,
/// code PROTOCOL) and then closed the connection.
void expect_protocol_error_and_close(const RawPeer::UntilClosed& r);
void expect_protocol_error_then_close(RawPeer& peer);

inline std::int64_t as_int(const Value& v) { return std::get<std::int64_t>(v); }

/// The figure `name` of a daemon report (stats(), checkpoint(), backup()); adds a test failure
/// and returns NULL when the report lacks it.
Value figure(const Report& report, std::string_view name);

/// The integer figure `name` of the daemon's STATS; adds a test failure and returns INT64_MIN
/// when it is missing or not an integer (the -1 some figures mean "none" by stays -1).
std::int64_t stat_int(MultiplexedClient& client, std::string_view name);

/// Waits (bounded by kReplyTimeout) until the STATS figure `name` equals `n`.
::testing::AssertionResult stat_reaches(MultiplexedClient& client, std::string_view name,
                                        std::int64_t n);

/// Polls `done` every 2 ms until it returns true (then true) or `timeout` passes (then false).
bool eventually(const std::function<bool()>& done, Clock::duration timeout);

bool contains(std::string_view text, std::string_view part);

/// "ok" if `step` returns; else what it threw: "OperationalError code 3: message" for the
/// SqliteError classes (with SQLite's primary code), "TimeoutError: message" for pasyn's own,
/// "other exception: message" for anything else.
std::string outcome_of(const std::function<void()>& step);

/// The outcome_of() prefix of a refusal for lack of permission (PERMISSION → SQLITE_PERM, 3).
inline const std::string kRefusedPermission = "OperationalError code 3:";

// ---- Clients as another user ----------------------------------------------------------------

/// What a sequence of steps run as another user did: each step's outcome_of(), by name.
class StepLog {
 public:
  void run(const std::string& name, const std::function<void()>& step);
  const std::string& text() const { return text_; }

 private:
  std::string text_;
};

struct AsUser {
  pid_t pid = -1;
  std::map<std::string, std::string> outcomes;  // step name → outcome
  std::string problem;                          // non-empty if the child did not report

  /// The outcome of `step`, or "(step not run; PROBLEM)".
  std::string operator[](const std::string& step) const;
};

/// Runs `script` in a child process that switched to `uid`/`gid` (no supplementary groups) and
/// returns what its steps did (bounded: 60 s). The child only runs the script and reports
/// through a pipe; it leaves with _exit, so nothing the parent owns is touched there. Forks a
/// multi-threaded process: not under ThreadSanitizer.
AsUser run_as(uid_t uid, gid_t gid, const std::function<void(StepLog&)>& script);

// ---- The daemon fixture -----------------------------------------------------------------------

/// Waits (bounded by kStartTimeout) until the daemon on `socket` answers a HELLO (HELLO_OK, or
/// the refusal of a peer it does not admit), failing early if `daemon` exits.
::testing::AssertionResult wait_until_serving(Process& daemon, const std::string& socket);

/// Starts pasyn-writerd on a fresh database and socket in a temporary directory, and stops it
/// with SIGTERM after the test, expecting a clean exit.
class DaemonTest : public ::testing::Test {
 protected:
  void TearDown() override;

  /// The daemon's command line for `socket`, with this test's extra flags (and
  /// `--log-level warn` unless they have a --log-level).
  std::vector<std::string> daemon_args(const std::vector<std::string>& extra,
                                       const std::string& socket) const;

  /// Starts the daemon and waits (bounded) until it answers on its socket.
  void start_daemon(const std::vector<std::string>& extra = {});

  /// SIGTERM, a bounded wait, SIGKILL as a last resort; expects exit status 0.
  void stop_daemon();

  /// Client options whose every wait is bounded: a hanging daemon fails the test, not the suite.
  static ClientOptions bounded_options();
  MultiplexedClient connect_client() const;

  /// One integer from a read-only connection opened now.
  std::int64_t query_int(const std::string& sql, const Params& params = {}) const;

  TempDir dir_;
  std::string db_ = dir_.file("db.sqlite");
  std::string sock_ = dir_.file("s.sock");
  std::string log_ = dir_.file("writerd.log");
  /// Extra environment of the daemon ("NAME=value"), e.g. LD_PRELOAD for fault injection.
  std::vector<std::string> daemon_env_;
  Process daemon_;
};

}  // namespace pasyn::itest
