// Integration tests: the real pasyn-writerd binary, raw protocol peers, several client processes.
//
// Every test starts its own daemon in a fresh temporary directory (DaemonTest) and every wait is
// bounded, so a misbehaving daemon fails a test instead of hanging the suite.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <poll.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstring>
#include <deque>
#include <filesystem>
#include <fstream>
#include <future>
#include <iostream>
#include <optional>
#include <pasyn/pasyn.hpp>
#include <pasyn/proto/codec.hpp>
#include <set>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

namespace {

namespace fs = std::filesystem;
namespace proto = pasyn::proto;
using Clock = std::chrono::steady_clock;
using namespace std::chrono_literals;

constexpr auto kStartTimeout = 10s;
constexpr auto kStopTimeout = 20s;
constexpr auto kReplyTimeout = 5s;

std::string read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream s;
  s << in.rdbuf();
  return s.str();
}

bool path_exists(const std::string& path) {
  struct stat st {};
  return ::lstat(path.c_str(), &st) == 0;
}

std::string describe_status(int status) {
  if (WIFEXITED(status)) return "exit status " + std::to_string(WEXITSTATUS(status));
  if (WIFSIGNALED(status)) return std::string("killed by ") + ::strsignal(WTERMSIG(status));
  return "status " + std::to_string(status);
}

bool exited_with(int status, int code) { return WIFEXITED(status) && WEXITSTATUS(status) == code; }

class TempDir {
 public:
  TempDir() {
    char tmpl[] = "/tmp/pasyn-itest-XXXXXX";
    const char* made = ::mkdtemp(tmpl);
    if (made == nullptr) throw std::runtime_error("mkdtemp failed");
    path_ = made;
  }
  ~TempDir() {
    std::error_code ec;
    fs::remove_all(path_, ec);
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  std::string file(const std::string& name) const { return (path_ / name).string(); }

 private:
  fs::path path_;
};

/// A child process started with fork/exec; killed (SIGKILL) and reaped by the destructor if the
/// test did not wait for it, so no test leaves a process behind.
class Process {
 public:
  Process() = default;
  Process(const Process&) = delete;
  Process& operator=(const Process&) = delete;
  ~Process() {
    if (pid_ > 0) {
      ::kill(pid_, SIGKILL);
      int status = 0;
      ::waitpid(pid_, &status, 0);
    }
  }

  /// Runs `args` (args[0] is the binary) with stdout and stderr appended to the given files.
  void spawn(const std::vector<std::string>& args, const std::string& out_path,
             const std::string& err_path) {
    std::vector<char*> argv;
    for (const auto& a : args) argv.push_back(const_cast<char*>(a.c_str()));
    argv.push_back(nullptr);
    const pid_t pid = ::fork();
    if (pid < 0) throw std::runtime_error(std::string("fork: ") + std::strerror(errno));
    if (pid == 0) {  // only async-signal-safe calls until exec
      const int in = ::open("/dev/null", O_RDONLY);
      const int out = ::open(out_path.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0644);
      const int err = ::open(err_path.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0644);
      if (in < 0 || out < 0 || err < 0) ::_exit(126);
      ::dup2(in, 0);
      ::dup2(out, 1);
      ::dup2(err, 2);
      ::execv(argv[0], argv.data());
      ::_exit(127);
    }
    pid_ = pid;
  }

  bool running() const { return pid_ > 0; }
  pid_t pid() const { return pid_; }
  void signal(int signo) const {
    if (pid_ > 0) ::kill(pid_, signo);
  }

  /// The wait status once the process has exited, or nullopt if it is still running after
  /// `timeout`.
  std::optional<int> wait_exit(Clock::duration timeout) {
    const auto deadline = Clock::now() + timeout;
    for (;;) {
      int status = 0;
      const pid_t r = ::waitpid(pid_, &status, WNOHANG);
      if (r == pid_) {
        pid_ = -1;
        return status;
      }
      if (r < 0 && errno != EINTR) return std::nullopt;
      if (Clock::now() >= deadline) return std::nullopt;
      std::this_thread::sleep_for(5ms);
    }
  }

  /// wait_exit(timeout), then SIGKILL as a last resort; returns the status and whether it had
  /// to be killed.
  std::pair<int, bool> wait_or_kill(Clock::duration timeout) {
    if (auto status = wait_exit(timeout)) return {*status, false};
    signal(SIGKILL);
    return {wait_exit(kStopTimeout).value_or(-1), true};
  }

 private:
  pid_t pid_ = -1;
};

/// A connected AF_UNIX stream socket, or -1.
int connect_unix(const std::string& path) {
  const int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return -1;
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  std::strncpy(addr.sun_path, path.c_str(), sizeof addr.sun_path - 1);
  if (::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
    ::close(fd);
    return -1;
  }
  return fd;
}

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

  bool send(const std::vector<std::uint8_t>& bytes) {
    std::size_t sent = 0;
    while (sent < bytes.size()) {
      const ssize_t n = ::send(fd_, bytes.data() + sent, bytes.size() - sent, MSG_NOSIGNAL);
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) return false;
      sent += static_cast<std::size_t>(n);
    }
    return true;
  }

  void close() {
    if (fd_ >= 0) ::close(fd_);
    fd_ = -1;
  }

  /// Sends a good HELLO and waits for HELLO_OK.
  ::testing::AssertionResult handshake() {
    std::vector<std::uint8_t> hello;
    proto::encode_hello(hello, proto::Hello{});
    if (!send(hello)) return ::testing::AssertionFailure() << "cannot send HELLO";
    auto frame = read_frame(kReplyTimeout);
    if (!frame) return ::testing::AssertionFailure() << "no reply to HELLO";
    if (frame->type != static_cast<std::uint8_t>(proto::MsgType::kHelloOk)) {
      return ::testing::AssertionFailure() << "HELLO answered with type " << int(frame->type);
    }
    return ::testing::AssertionSuccess();
  }

  /// The next frame, or nullopt if none arrived within `timeout` or the connection closed.
  std::optional<Frame> read_frame(Clock::duration timeout) {
    const auto deadline = Clock::now() + timeout;
    while (frames_.empty() && !closed_ && read_some(deadline)) {
    }
    if (frames_.empty()) return std::nullopt;
    Frame f = std::move(frames_.front());
    frames_.pop_front();
    return f;
  }

  struct UntilClosed {
    std::vector<Frame> frames;  // every frame received meanwhile
    bool closed = false;        // EOF (or reset) seen before the timeout
    std::string decode_error;   // non-empty if the bytes were not valid frames
    Clock::duration elapsed{};
  };

  /// Reads until the daemon closes the connection or `timeout` passes.
  UntilClosed read_until_closed(Clock::duration timeout) {
    const auto start = Clock::now();
    while (!closed_ && read_some(start + timeout)) {
    }
    UntilClosed r;
    r.elapsed = Clock::now() - start;
    r.frames.assign(std::make_move_iterator(frames_.begin()),
                    std::make_move_iterator(frames_.end()));
    frames_.clear();
    r.closed = closed_;
    r.decode_error = decode_error_;
    return r;
  }

 private:
  // One bounded read; false on timeout or once the connection is closed.
  bool read_some(Clock::time_point deadline) {
    const auto left =
        std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now()).count();
    if (left <= 0) return false;
    pollfd p{fd_, POLLIN, 0};
    const int ready = ::poll(&p, 1, static_cast<int>(left));
    if (ready < 0) return errno == EINTR;
    if (ready == 0) return false;
    auto space = decoder_.prepare(64 * 1024);
    const ssize_t n = ::recv(fd_, space.data(), space.size(), 0);
    if (n < 0 && errno == EINTR) return true;
    if (n <= 0) {  // EOF, or ECONNRESET when the daemon closed with our bytes unread
      decoder_.commit(0);
      closed_ = true;
      return false;
    }
    decoder_.commit(static_cast<std::size_t>(n));
    proto::FrameView view;
    for (;;) {
      const auto status = decoder_.next(view);
      if (status == proto::FrameDecoder::Status::kNeedMore) break;
      if (status == proto::FrameDecoder::Status::kError) {
        decode_error_ = decoder_.error();
        break;
      }
      frames_.push_back({view.type, view.request_id, {view.payload.begin(), view.payload.end()}});
    }
    return true;
  }

  int fd_;
  proto::FrameDecoder decoder_;
  std::deque<Frame> frames_;
  bool closed_ = false;
  std::string decode_error_;
};

/// Asserts that the daemon answered with exactly one ERROR frame (request id 0, domain pasyn,
/// code PROTOCOL) and then closed the connection.
void expect_protocol_error_and_close(const RawPeer::UntilClosed& r) {
  EXPECT_TRUE(r.closed) << "the daemon did not close the connection within 5 s";
  EXPECT_EQ(r.decode_error, "");
  ASSERT_EQ(r.frames.size(), 1u) << "expected exactly one ERROR frame before the close";
  const Frame& f = r.frames[0];
  EXPECT_EQ(f.type, static_cast<std::uint8_t>(proto::MsgType::kError));
  EXPECT_EQ(f.request_id, 0u);
  proto::ErrorReply e;
  std::string why;
  ASSERT_TRUE(proto::decode_error(f.payload, e, why)) << why;
  EXPECT_EQ(e.domain, proto::ErrorDomain::kPasyn);
  EXPECT_EQ(e.code, static_cast<std::int32_t>(proto::PasynCode::kProtocol));
  EXPECT_EQ(e.extended_code, e.code);
  EXPECT_FALSE(e.message.empty());
}

void expect_protocol_error_then_close(RawPeer& peer) {
  expect_protocol_error_and_close(peer.read_until_closed(kReplyTimeout));
}

std::vector<std::uint8_t> little_endian_u32(std::uint32_t v) {
  return {static_cast<std::uint8_t>(v), static_cast<std::uint8_t>(v >> 8),
          static_cast<std::uint8_t>(v >> 16), static_cast<std::uint8_t>(v >> 24)};
}

std::int64_t as_int(const pasyn::Value& v) { return std::get<std::int64_t>(v); }

/// Starts pasyn-writerd on a fresh database and socket in a temporary directory, and stops it
/// with SIGTERM after the test, expecting a clean exit.
class DaemonTest : public ::testing::Test {
 protected:
  void TearDown() override {
    if (daemon_.running()) stop_daemon();
    if (HasFailure()) {
      std::cerr << "---- pasyn-writerd output ----\n" << read_file(log_) << "-----------------\n";
    }
  }

  /// The daemon's command line for `socket`, with this test's extra flags.
  std::vector<std::string> daemon_args(const std::vector<std::string>& extra,
                                       const std::string& socket) const {
    std::vector<std::string> args{PASYN_WRITERD, "--database",  db_,   "--socket",
                                  socket,        "--log-level", "warn"};
    args.insert(args.end(), extra.begin(), extra.end());
    return args;
  }

  /// Starts the daemon and waits (bounded) until its socket accepts connections.
  void start_daemon(const std::vector<std::string>& extra = {}) {
    daemon_.spawn(daemon_args(extra, sock_), log_, log_);
    ASSERT_TRUE(wait_until_serving(daemon_, sock_));
  }

  ::testing::AssertionResult wait_until_serving(Process& daemon, const std::string& socket) {
    const auto deadline = Clock::now() + kStartTimeout;
    while (Clock::now() < deadline) {
      const int fd = connect_unix(socket);
      if (fd >= 0) {
        ::close(fd);
        return ::testing::AssertionSuccess();
      }
      if (auto status = daemon.wait_exit(0s)) {
        return ::testing::AssertionFailure()
               << "pasyn-writerd exited before serving (" << describe_status(*status) << ")";
      }
      std::this_thread::sleep_for(10ms);
    }
    return ::testing::AssertionFailure() << "pasyn-writerd did not accept connections in 10 s";
  }

  /// SIGTERM, a bounded wait, SIGKILL as a last resort; expects exit status 0.
  void stop_daemon() {
    daemon_.signal(SIGTERM);
    const auto [status, killed] = daemon_.wait_or_kill(kStopTimeout);
    EXPECT_FALSE(killed) << "pasyn-writerd did not exit within 20 s of SIGTERM";
    EXPECT_TRUE(exited_with(status, 0)) << describe_status(status);
  }

  static pasyn::ClientOptions bounded_options() {
    pasyn::ClientOptions options;
    options.connect_timeout = 5s;
    options.request_timeout = 10s;  // a hanging daemon fails the test instead of the suite
    return options;
  }

  pasyn::MultiplexedClient connect_client() const {
    return pasyn::MultiplexedClient(sock_, bounded_options());
  }

  /// One integer from a read-only connection opened now.
  std::int64_t query_int(const std::string& sql) const {
    auto conn = pasyn::connect(db_, pasyn::OpenFlags::readonly());
    auto row = conn.execute_fetchone(sql);
    return row ? as_int(row->at(0)) : -1;
  }

  TempDir dir_;
  std::string db_ = dir_.file("db.sqlite");
  std::string sock_ = dir_.file("s.sock");
  std::string log_ = dir_.file("writerd.log");
  Process daemon_;
};

// ---- Bad input --------------------------------------------------------------------------------

/// A daemon with a short handshake timeout and a well-behaved client connected before any bad
/// peer, which must still be served after it.
class BadInputTest : public DaemonTest {
 protected:
  void SetUp() override {
    ASSERT_NO_FATAL_FAILURE(start_daemon({"--handshake-timeout", "300"}));
    before_.emplace(connect_client());
    before_->execute("CREATE TABLE probe (v TEXT)");
  }

  void TearDown() override {
    before_.reset();
    DaemonTest::TearDown();
  }

  /// The client connected before the bad peer still gets its writes and pings answered, and a
  /// new client can connect and write.
  void expect_still_serving() {
    try {
      EXPECT_EQ(before_->execute("INSERT INTO probe (v) VALUES (?)", {"before"}), 1);
      EXPECT_TRUE(before_->ping());
      auto fresh = connect_client();
      EXPECT_TRUE(fresh.ping());
      EXPECT_EQ(fresh.execute("INSERT INTO probe (v) VALUES (?)", {"fresh"}), 1);
    } catch (const pasyn::Error& e) {
      ADD_FAILURE() << "the daemon stopped serving other clients: " << e.what();
    }
  }

  std::optional<pasyn::MultiplexedClient> before_;
};

TEST_F(BadInputTest, FrameLengthBelowNineIsAProtocolErrorAndClosesOnlyThatConnection) {
  RawPeer peer(sock_);
  ASSERT_TRUE(peer.handshake());
  std::vector<std::uint8_t> bytes = little_endian_u32(8);  // type + 7 bytes of request id
  bytes.insert(bytes.end(), {0x02, 1, 0, 0, 0, 0, 0, 0});
  ASSERT_TRUE(peer.send(bytes));
  expect_protocol_error_then_close(peer);
  expect_still_serving();
}

TEST_F(BadInputTest, AbsurdFrameLengthIsRefusedBeforeTheBodyArrives) {
  RawPeer peer(sock_);
  ASSERT_TRUE(peer.handshake());
  ASSERT_TRUE(peer.send(little_endian_u32(0xFFFFFFFF)));  // and no body at all
  expect_protocol_error_then_close(peer);
  expect_still_serving();
}

TEST_F(BadInputTest, AbsurdFrameLengthInsteadOfHelloIsRefusedToo) {
  RawPeer peer(sock_);
  ASSERT_TRUE(peer.send(little_endian_u32(0xFFFFFFFF)));
  expect_protocol_error_then_close(peer);
  expect_still_serving();
}

TEST_F(BadInputTest, HelloWithWrongMagicIsAProtocolError) {
  RawPeer peer(sock_);
  std::vector<std::uint8_t> hello;
  proto::encode_hello(hello, proto::Hello{0x12345678, proto::kVersion, 0});
  ASSERT_TRUE(peer.send(hello));
  expect_protocol_error_then_close(peer);
  expect_still_serving();
}

TEST_F(BadInputTest, HelloWithUnsupportedVersionIsAProtocolError) {
  RawPeer peer(sock_);
  std::vector<std::uint8_t> hello;
  proto::encode_hello(hello, proto::Hello{proto::kMagic, proto::kVersion + 1, 0});
  ASSERT_TRUE(peer.send(hello));
  expect_protocol_error_then_close(peer);
  expect_still_serving();
}

TEST_F(BadInputTest, FirstFrameOtherThanHelloIsAProtocolError) {
  RawPeer peer(sock_);
  std::vector<std::uint8_t> ping;
  proto::encode_empty(ping, proto::MsgType::kPing, 1);
  ASSERT_TRUE(peer.send(ping));
  expect_protocol_error_then_close(peer);
  expect_still_serving();
}

TEST_F(BadInputTest, UnknownMessageTypeAfterHandshakeIsAProtocolError) {
  RawPeer peer(sock_);
  ASSERT_TRUE(peer.handshake());
  std::vector<std::uint8_t> frame;
  proto::FrameWriter(frame, static_cast<proto::MsgType>(0x42), 7).finish();
  ASSERT_TRUE(peer.send(frame));
  expect_protocol_error_then_close(peer);
  expect_still_serving();
}

TEST_F(BadInputTest, TruncatedExecutePayloadIsAProtocolErrorAndRunsNothing) {
  RawPeer peer(sock_);
  ASSERT_TRUE(peer.handshake());
  std::vector<std::uint8_t> frame;
  {
    proto::FrameWriter w(frame, proto::MsgType::kExecute, 5);
    w.u32(1000);  // an SQL string of 1000 bytes, of which only a few follow
    for (char c : std::string("INSERT")) w.u8(static_cast<std::uint8_t>(c));
    w.finish();
  }
  ASSERT_TRUE(peer.send(frame));
  expect_protocol_error_then_close(peer);
  expect_still_serving();
}

TEST_F(BadInputTest, ExecuteWithTrailingGarbageIsAProtocolErrorAndRunsNothing) {
  RawPeer peer(sock_);
  ASSERT_TRUE(peer.handshake());
  std::vector<std::uint8_t> frame;
  {
    proto::FrameWriter w(frame, proto::MsgType::kExecute, 5);
    w.string("INSERT INTO probe (v) VALUES ('garbage')");
    w.params({});
    w.u32(0xDEADBEEF);  // bytes the layout does not account for
    w.finish();
  }
  ASSERT_TRUE(peer.send(frame));
  expect_protocol_error_then_close(peer);
  expect_still_serving();
  EXPECT_EQ(query_int("SELECT count(*) FROM probe WHERE v = 'garbage'"), 0);
}

TEST_F(BadInputTest, ExecuteWithAnUnknownValueTagIsAProtocolError) {
  RawPeer peer(sock_);
  ASSERT_TRUE(peer.handshake());
  std::vector<std::uint8_t> frame;
  {
    proto::FrameWriter w(frame, proto::MsgType::kExecute, 5);
    w.string("INSERT INTO probe (v) VALUES (?)");
    w.u32(1);  // one parameter...
    w.u8(9);   // ...whose tag names no type
    w.finish();
  }
  ASSERT_TRUE(peer.send(frame));
  expect_protocol_error_then_close(peer);
  expect_still_serving();
}

TEST_F(BadInputTest, SilentClientIsClosedWithAProtocolErrorAfterTheHandshakeTimeout) {
  RawPeer peer(sock_);
  ASSERT_TRUE(peer.connected());
  const auto r = peer.read_until_closed(kReplyTimeout);
  expect_protocol_error_and_close(r);
  EXPECT_GE(r.elapsed, 250ms);  // --handshake-timeout 300; the timer starts after our connect()
  EXPECT_LT(r.elapsed, 3s);
  expect_still_serving();
}

TEST_F(BadInputTest, HalfAFrameThenDisconnectRunsNothingAndHarmsNoOne) {
  {
    RawPeer peer(sock_);
    ASSERT_TRUE(peer.handshake());
    std::vector<std::uint8_t> frame;
    proto::encode_statement(frame, proto::MsgType::kExecute, 1,
                            "INSERT INTO probe (v) VALUES ('half')", {});
    frame.resize(frame.size() / 2);
    ASSERT_TRUE(peer.send(frame));
  }  // disconnects
  expect_still_serving();
  EXPECT_EQ(query_int("SELECT count(*) FROM probe WHERE v = 'half'"), 0);
}

TEST_F(BadInputTest, HalfAHelloThenDisconnectHarmsNoOne) {
  {
    RawPeer peer(sock_);
    std::vector<std::uint8_t> hello;
    proto::encode_hello(hello, proto::Hello{});
    hello.resize(hello.size() / 2);
    ASSERT_TRUE(peer.send(hello));
  }
  expect_still_serving();
}

// ---- Many processes ---------------------------------------------------------------------------

TEST_F(DaemonTest, FourProcessesOfEightThreadsEachGetEveryWriteAcknowledgedExactlyOnce) {
  constexpr int kProcesses = 4, kThreads = 8, kRows = 200;
  ASSERT_NO_FATAL_FAILURE(start_daemon());
  connect_client().execute(
      "CREATE TABLE acks (proc INTEGER, thread INTEGER, seq INTEGER, UNIQUE (proc, thread, seq))");

  std::vector<Process> writers(kProcesses);
  for (int p = 0; p < kProcesses; ++p) {
    const std::string name = "load-" + std::to_string(p);
    writers[p].spawn({PASYN_LOAD_WRITER, sock_, std::to_string(p), std::to_string(kThreads),
                      std::to_string(kRows)},
                     dir_.file(name + ".out"), dir_.file(name + ".err"));
  }
  const auto deadline = Clock::now() + 45s;
  for (int p = 0; p < kProcesses; ++p) {
    const std::string name = "load-" + std::to_string(p);
    const auto [status, killed] = writers[p].wait_or_kill(deadline - Clock::now());
    EXPECT_FALSE(killed) << name << " did not finish within 45 s";
    EXPECT_TRUE(exited_with(status, 0)) << name << ": " << describe_status(status) << "\n"
                                        << read_file(dir_.file(name + ".err"));
    EXPECT_EQ(read_file(dir_.file(name + ".out")),
              "acked " + std::to_string(kThreads * kRows) + " errors 0\n")
        << name;
  }

  auto conn = pasyn::connect(db_, pasyn::OpenFlags::readonly());
  auto row = conn.execute_fetchone(
      "SELECT count(*), count(DISTINCT proc || '/' || thread || '/' || seq) FROM acks");
  ASSERT_TRUE(row.has_value());
  EXPECT_EQ(as_int(row->at(0)), kProcesses * kThreads * kRows);
  EXPECT_EQ(as_int(row->at(1)), kProcesses * kThreads * kRows);
}

// ---- Group commit and SQL errors --------------------------------------------------------------

TEST_F(DaemonTest, FailingMembersOfAGroupCommitFailAloneAndTheRestCommit) {
  constexpr int kRequests = 500;
  ASSERT_NO_FATAL_FAILURE(start_daemon());
  auto client = connect_client();
  client.execute("CREATE TABLE u (k INTEGER UNIQUE, req INTEGER)");

  // Request i inserts key i, except every 10th, which repeats the key of the request before it.
  auto key_of = [](int i) { return i % 10 == 9 ? i - 1 : i; };
  std::vector<std::future<std::int64_t>> futures;
  for (int i = 0; i < kRequests; ++i) {
    futures.push_back(client.execute_async("INSERT INTO u (k, req) VALUES (?, ?)", {key_of(i), i}));
  }
  const auto deadline = Clock::now() + 20s;
  std::set<std::int64_t> succeeded;
  for (int i = 0; i < kRequests; ++i) {
    ASSERT_EQ(futures[i].wait_until(deadline), std::future_status::ready) << "request " << i;
    if (i % 10 == 9) {
      try {
        futures[i].get();
        ADD_FAILURE() << "request " << i << " repeated a key and succeeded";
      } catch (const pasyn::IntegrityError& e) {
        EXPECT_EQ(e.extended_code(), 2067) << e.what();  // SQLITE_CONSTRAINT_UNIQUE
      }
    } else {
      EXPECT_EQ(futures[i].get(), 1) << "request " << i;
      succeeded.insert(i);
    }
  }

  auto conn = pasyn::connect(db_, pasyn::OpenFlags::readonly());
  std::set<std::int64_t> stored;
  for (const auto& row : conn.execute_fetchall("SELECT k, req FROM u")) {
    EXPECT_EQ(as_int(row[0]), as_int(row[1]));  // each key holds the row of the request that won
    stored.insert(as_int(row[1]));
  }
  EXPECT_EQ(stored, succeeded);
  EXPECT_EQ(succeeded.size(), std::size_t{kRequests - kRequests / 10});
}

TEST_F(DaemonTest, BadSqlIsATypedErrorAndTheDaemonKeepsServing) {
  ASSERT_NO_FATAL_FAILURE(start_daemon());
  auto client = connect_client();
  client.execute("CREATE TABLE t (x)");
  EXPECT_THROW(client.execute("INSERT INTO t VALUES (1"), pasyn::OperationalError);
  EXPECT_THROW(client.execute("SELEC 1"), pasyn::OperationalError);
  EXPECT_THROW(client.execute("INSERT INTO nowhere VALUES (1)"), pasyn::OperationalError);
  EXPECT_THROW(client.execute("INSERT INTO t VALUES (1); INSERT INTO t VALUES (2)"),
               pasyn::ProgrammingError);
  EXPECT_THROW(client.execute("BEGIN"), pasyn::ProgrammingError);
  EXPECT_THROW(client.execute("COMMIT"), pasyn::ProgrammingError);
  EXPECT_EQ(query_int("SELECT count(*) FROM t"), 0);
  EXPECT_TRUE(client.ping());
  EXPECT_EQ(client.execute("INSERT INTO t VALUES (3)"), 1);
  EXPECT_EQ(query_int("SELECT count(*) FROM t"), 1);
}

TEST_F(DaemonTest, ExecuteReturningRowidReturnsTheRowidOfTheInsertedRow) {
  ASSERT_NO_FATAL_FAILURE(start_daemon());
  auto client = connect_client();
  client.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT)");
  EXPECT_EQ(client.execute_returning_rowid("INSERT INTO t (v) VALUES ('a')"), 1);
  EXPECT_EQ(client.execute_returning_rowid("INSERT INTO t (id, v) VALUES (42, 'b')"), 42);
  EXPECT_EQ(client.execute_returning_rowid("INSERT INTO t (v) VALUES (?)", {"c"}), 43);
  EXPECT_EQ(client.execute_returning_rowid("UPDATE t SET v = 'd' WHERE id = 1"), 0);
}

TEST_F(DaemonTest, ExecuteFetchallWithReturningReturnsTheWrittenRows) {
  ASSERT_NO_FATAL_FAILURE(start_daemon());
  auto client = connect_client();
  client.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT)");
  const auto rows =
      client.execute_fetchall("INSERT INTO t (v) VALUES (?), (?) RETURNING id, v", {"a", "b"});
  ASSERT_EQ(rows.size(), 2u);
  EXPECT_EQ(rows[0], (pasyn::Row{std::int64_t{1}, std::string("a")}));
  EXPECT_EQ(rows[1], (pasyn::Row{std::int64_t{2}, std::string("b")}));
  EXPECT_EQ(query_int("SELECT count(*) FROM t"), 2);
}

TEST_F(DaemonTest, ExecutescriptWhoseThirdStatementFailsLeavesNothingOfTheFirstTwo) {
  ASSERT_NO_FATAL_FAILURE(start_daemon());
  auto client = connect_client();
  client.execute("CREATE TABLE t (x INTEGER UNIQUE)");
  EXPECT_THROW(client.executescript("INSERT INTO t VALUES (1); INSERT INTO t VALUES (2); "
                                    "INSERT INTO t VALUES (1); INSERT INTO t VALUES (3);"),
               pasyn::IntegrityError);
  EXPECT_THROW(client.executescript("INSERT INTO t VALUES (4); INSERT INTO t VALUES (5); "
                                    "INSERT INTO nowhere VALUES (6);"),
               pasyn::OperationalError);
  EXPECT_EQ(query_int("SELECT count(*) FROM t"), 0);
  client.executescript("INSERT INTO t VALUES (7); INSERT INTO t VALUES (8);");
  EXPECT_EQ(query_int("SELECT count(*) FROM t"), 2);
}

TEST_F(DaemonTest, AnAcknowledgedWriteIsVisibleToAReadConnectionOpenedAfterwards) {
  ASSERT_NO_FATAL_FAILURE(start_daemon());
  auto client = connect_client();
  client.execute("CREATE TABLE t (x INTEGER)");
  for (int i = 1; i <= 50; ++i) {
    ASSERT_EQ(client.execute("INSERT INTO t VALUES (?)", {i}), 1);
    ASSERT_EQ(query_int("SELECT max(x) FROM t"), i) << "write " << i << " acknowledged, not seen";
  }
}

// ---- Faults and shutdown ----------------------------------------------------------------------

TEST_F(DaemonTest, KilledDaemonFailsAWaitingCallAndLaterCallsWithConnectionLost) {
  ASSERT_NO_FATAL_FAILURE(start_daemon());
  pasyn::ClientOptions options;
  options.request_timeout = 20s;  // bounds the std::async below even if the client hangs
  pasyn::MultiplexedClient client(sock_, options);
  ASSERT_TRUE(client.ping());
  auto call = std::async(std::launch::async, [&] {
    return client.execute_fetchall(
        "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 300000000) "
        "SELECT count(*) FROM c");
  });
  std::this_thread::sleep_for(300ms);  // let the writer start the statement
  ASSERT_EQ(call.wait_for(0s), std::future_status::timeout) << "the long statement finished";

  daemon_.signal(SIGKILL);
  const auto killed_at = Clock::now();
  ASSERT_EQ(call.wait_for(5s), std::future_status::ready) << "the waiting call hangs";
  EXPECT_THROW(call.get(), pasyn::ConnectionLostError);
  EXPECT_LT(Clock::now() - killed_at, 5s);
  const auto status = daemon_.wait_exit(kStopTimeout);
  ASSERT_TRUE(status.has_value());
  EXPECT_TRUE(WIFSIGNALED(*status) && WTERMSIG(*status) == SIGKILL) << describe_status(*status);

  const auto later = Clock::now();
  EXPECT_THROW(client.ping(), pasyn::ConnectionLostError);
  EXPECT_THROW(client.execute("SELECT 1"), pasyn::ConnectionLostError);
  EXPECT_LT(Clock::now() - later, 2s);
}

/// Queues a slow statement and many inserts, sends SIGTERM, and checks what every shutdown must
/// keep: no call hangs, exit status 0, no socket left, every acknowledged row stored.
class SigtermTest : public DaemonTest {
 protected:
  static constexpr int kRequests = 2000;

  struct Outcome {
    std::vector<std::int64_t> acked;
    int refused = 0;  // OperationalError: the daemon said it did not run the request
    int lost = 0;     // ConnectionLostError: outcome unknown
    int other = 0;    // any other pasyn::Error
  };

  /// With `wait_until_read`, SIGTERM is sent only once the daemon has read every request (a
  /// ping sent after them was answered), so that all of them are queued in the daemon.
  Outcome submit_then_sigterm(bool wait_until_read) {
    Outcome out;
    auto client = connect_client();
    client.execute("CREATE TABLE q (i INTEGER PRIMARY KEY)");
    // The slow statement keeps the writer busy, so the inserts are still queued at SIGTERM.
    auto slow = client.execute_fetchall_async(
        "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 3000000) "
        "SELECT count(*) FROM c");
    std::vector<std::future<std::int64_t>> futures;
    for (int i = 0; i < kRequests; ++i) {
      futures.push_back(client.execute_async("INSERT INTO q (i) VALUES (?)", {i}));
    }
    if (wait_until_read) {
      auto pong = client.ping_async();
      EXPECT_EQ(pong.wait_for(kReplyTimeout), std::future_status::ready);
      EXPECT_EQ(slow.wait_for(0s), std::future_status::timeout) << "the writer was idle already";
    }
    daemon_.signal(SIGTERM);

    const auto deadline = Clock::now() + 20s;
    EXPECT_EQ(slow.wait_until(deadline), std::future_status::ready) << "the slow statement hangs";
    for (int i = 0; i < kRequests; ++i) {
      if (futures[i].wait_until(deadline) != std::future_status::ready) {
        ADD_FAILURE() << "request " << i << " hangs after SIGTERM";
        return out;
      }
      try {
        EXPECT_EQ(futures[i].get(), 1);
        out.acked.push_back(i);
      } catch (const pasyn::OperationalError&) {
        ++out.refused;
      } catch (const pasyn::ConnectionLostError&) {
        ++out.lost;
      } catch (const pasyn::Error&) {
        ++out.other;
      }
    }
    const auto [status, killed] = daemon_.wait_or_kill(kStopTimeout);
    EXPECT_FALSE(killed);
    EXPECT_TRUE(exited_with(status, 0)) << describe_status(status);
    EXPECT_FALSE(path_exists(sock_)) << "the socket file was left behind";

    auto conn = pasyn::connect(db_, pasyn::OpenFlags::readonly());
    std::set<std::int64_t> stored;
    for (const auto& row : conn.execute_fetchall("SELECT i FROM q")) stored.insert(as_int(row[0]));
    for (auto i : out.acked) {
      EXPECT_TRUE(stored.count(i)) << "acknowledged row " << i << " is missing";
    }
    std::cout << "[          ] " << out.acked.size() << " acknowledged, " << out.refused
              << " refused, " << out.lost << " lost, " << out.other << " other errors\n";
    return out;
  }
};

TEST_F(SigtermTest, RequestsSentJustBeforeSigtermEachSucceedOrFailAndAcknowledgedRowsAreKept) {
  ASSERT_NO_FATAL_FAILURE(start_daemon());
  submit_then_sigterm(false);
}

TEST_F(SigtermTest, WorkQueuedInTheDaemonIsFinishedBeforeItExits) {
  ASSERT_NO_FATAL_FAILURE(start_daemon());
  const auto out = submit_then_sigterm(true);
  EXPECT_EQ(out.acked.size(), std::size_t{kRequests});
}

TEST_F(DaemonTest, ShutdownServerMakesTheDaemonExitCleanlyAndRemoveItsSocket) {
  ASSERT_NO_FATAL_FAILURE(start_daemon());
  auto client = connect_client();
  client.execute("CREATE TABLE t (x)");
  client.execute("INSERT INTO t VALUES (1)");
  client.shutdown_server();
  const auto [status, killed] = daemon_.wait_or_kill(kStopTimeout);
  EXPECT_FALSE(killed);
  EXPECT_TRUE(exited_with(status, 0)) << describe_status(status);
  EXPECT_FALSE(path_exists(sock_));
  EXPECT_EQ(query_int("SELECT count(*) FROM t"), 1);
}

// ---- Start-up refusals ------------------------------------------------------------------------

TEST_F(DaemonTest, SecondDaemonOnTheSameDatabaseIsRefusedAndTheFirstKeepsServing) {
  ASSERT_NO_FATAL_FAILURE(start_daemon());
  auto client = connect_client();
  client.execute("CREATE TABLE t (x)");

  const std::string second_sock = dir_.file("second.sock");
  const std::string second_err = dir_.file("second.err");
  Process second;
  second.spawn(daemon_args({}, second_sock), second_err, second_err);
  const auto [status, killed] = second.wait_or_kill(kStartTimeout);
  EXPECT_FALSE(killed) << "the second daemon kept running";
  EXPECT_FALSE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << describe_status(status);
  EXPECT_TRUE(WIFEXITED(status)) << describe_status(status);
  const std::string err = read_file(second_err);
  EXPECT_NE(err.find("already served"), std::string::npos) << err;
  EXPECT_FALSE(path_exists(second_sock));

  EXPECT_TRUE(client.ping());
  EXPECT_EQ(client.execute("INSERT INTO t VALUES (1)"), 1);
  EXPECT_TRUE(connect_client().ping());
}

TEST_F(DaemonTest, RegularFileAtTheSocketPathIsRefusedAndLeftUntouched) {
  const std::string content = "precious data, not a socket\n";
  std::ofstream(sock_, std::ios::binary) << content;
  daemon_.spawn(daemon_args({}, sock_), log_, log_);
  const auto [status, killed] = daemon_.wait_or_kill(kStartTimeout);
  EXPECT_FALSE(killed) << "the daemon started over a regular file";
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) != 0) << describe_status(status);
  const std::string err = read_file(log_);
  EXPECT_NE(err.find("not a socket"), std::string::npos) << err;
  EXPECT_EQ(read_file(sock_), content);
}

TEST_F(DaemonTest, StaleSocketFileIsReplacedAndServed) {
  {
    const int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    ASSERT_GE(fd, 0);
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    std::strncpy(addr.sun_path, sock_.c_str(), sizeof addr.sun_path - 1);
    ASSERT_EQ(::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr), 0);
    ::close(fd);  // leaves the socket file behind, with nobody accepting on it
  }
  struct stat st {};
  ASSERT_EQ(::lstat(sock_.c_str(), &st), 0);
  ASSERT_TRUE(S_ISSOCK(st.st_mode));
  ASSERT_LT(connect_unix(sock_), 0);

  ASSERT_NO_FATAL_FAILURE(start_daemon());
  auto client = connect_client();
  EXPECT_TRUE(client.ping());
  EXPECT_EQ(client.execute("CREATE TABLE t (x)"), 0);
}

}  // namespace
