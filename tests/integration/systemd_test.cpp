// Integration tests of pasyn-writerd as a systemd service (daemon/src/systemd.cpp): socket
// activation through the real systemd-socket-activate, sd_notify readiness, status and stopping
// messages, the watchdog that stops while the writer is stuck, and service instances with their
// directories and configuration file. No test touches /var/lib/pasyn, /run/pasyn or /etc/pasyn:
// the service directories are temporary ones given through systemd's variables.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <signal.h>
#include <sqlite3.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <future>
#include <iostream>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "daemon_fixture.hpp"

namespace {

using namespace pasyn::itest;

constexpr const char* kSocketActivate = "/usr/bin/systemd-socket-activate";

// ---- Socket activation ------------------------------------------------------------------------

/// Runs the daemon under systemd-socket-activate, which listens first and execs the daemon (in
/// its own process, keeping its pid) when the first client connects.
class SocketActivationTest : public DaemonTest {
 protected:
  void SetUp() override {
    // A missing tool must fail, not skip: skipped tests would hide that activation is untested.
    ASSERT_TRUE(std::filesystem::exists(kSocketActivate))
        << kSocketActivate << " is missing: install the systemd package (scripts/install-deps.sh)";
  }

  /// Starts systemd-socket-activate listening on `address`, with the daemon as its program.
  void start_activator(const std::string& address) {
    daemon_.spawn(
        {kSocketActivate, "-l", address, PASYN_WRITERD, "--database", db_, "--log-level", "info"},
        log_, log_);
    ASSERT_TRUE(wait_for_file_content(log_, "Listening on", kStartTimeout));
  }
};

/// A TCP port on 127.0.0.1 that nothing listened on a moment ago.
int free_tcp_port() {
  const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof addr;
  if (fd < 0 || ::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0 ||
      ::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len) != 0) {
    if (fd >= 0) ::close(fd);
    return -1;
  }
  ::close(fd);
  return ntohs(addr.sin_port);
}

bool connect_tcp(int port) {
  const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return false;
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = htons(static_cast<std::uint16_t>(port));
  const bool ok = ::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0;
  ::close(fd);
  return ok;
}

bool is_socket(const std::string& path) {
  struct stat st {};
  return ::lstat(path.c_str(), &st) == 0 && S_ISSOCK(st.st_mode);
}

TEST_F(SocketActivationTest, FirstClientStartsTheDaemonOnThePassedSocketWhichOutlivesIt) {
  const std::string act = dir_.file("act.sock");
  ASSERT_NO_FATAL_FAILURE(start_activator(act));
  const bool started_early = path_exists(db_);
  EXPECT_FALSE(started_early) << "the daemon started before any client connected";
  std::ostringstream transcript;
  transcript << "$ systemd-socket-activate -l act.sock pasyn-writerd --database db.sqlite\n"
             << "before the first connection: db.sqlite "
             << (started_early ? "exists" : "does not exist yet") << "\n";

  {
    pasyn::MultiplexedClient client(act, bounded_options());  // the connection activates it
    client.execute("CREATE TABLE kv (k TEXT, v INTEGER)");
    EXPECT_EQ(client.execute("INSERT INTO kv (k, v) VALUES (?, ?)", {"one", 1}), 1);
    EXPECT_EQ(client.execute("INSERT INTO kv (k, v) VALUES (?, ?)", {"two", 2}), 1);

    auto conn = pasyn::connect(db_, pasyn::OpenFlags::readonly());
    const auto rows = conn.execute_fetchall("SELECT k, v FROM kv ORDER BY v");
    ASSERT_EQ(rows.size(), 2u);
    EXPECT_EQ(std::get<std::string>(rows[0][0]), "one");
    EXPECT_EQ(std::get<std::string>(rows[1][0]), "two");
    transcript << "rows read with pasyn::Connection:";
    for (const auto& row : rows) {
      transcript << " (" << std::get<std::string>(row[0]) << ", " << as_int(row[1]) << ")";
    }
    transcript << "\n";

    const auto stats = client.stats();
    EXPECT_EQ(std::get<std::string>(figure(stats, "socket")), act);
    // systemd-socket-activate execs the daemon in place: the pid we signal is the daemon's.
    EXPECT_EQ(as_int(figure(stats, "pid")), daemon_.pid());
    transcript << "stats: socket=" << std::get<std::string>(figure(stats, "socket"))
               << " pid=" << as_int(figure(stats, "pid")) << " (activator pid " << daemon_.pid()
               << ") requests=" << as_int(figure(stats, "requests")) << "\n";
  }

  daemon_.signal(SIGTERM);
  const auto [status, killed] = daemon_.wait_or_kill(kStopTimeout);
  EXPECT_FALSE(killed) << "pasyn-writerd did not exit within 20 s of SIGTERM";
  EXPECT_TRUE(exited_with(status, 0)) << describe_status(status);
  EXPECT_TRUE(is_socket(act)) << "the daemon removed the socket systemd passed it";
  transcript << "SIGTERM: " << describe_status(status) << "; " << act
             << (is_socket(act) ? " still exists" : " is gone") << "\n";

  std::cout << "---- socket activation transcript ----\n"
            << transcript.str() << "---- systemd-socket-activate and pasyn-writerd stderr ----\n"
            << read_file(log_) << "--------------------------------------\n";
}

TEST_F(SocketActivationTest, PassedTcpSocketMakesTheDaemonRefuseToStart) {
  const int port = free_tcp_port();
  ASSERT_GT(port, 0);
  ASSERT_NO_FATAL_FAILURE(start_activator("127.0.0.1:" + std::to_string(port)));
  ASSERT_TRUE(connect_tcp(port)) << "systemd-socket-activate does not listen on port " << port;

  const auto status = daemon_.wait_exit(kStopTimeout);
  ASSERT_TRUE(status.has_value()) << "pasyn-writerd keeps running on a TCP socket";
  EXPECT_TRUE(exited_with(*status, 1)) << describe_status(*status);
  EXPECT_NE(read_file(log_).find("not a listening Unix stream socket"), std::string::npos)
      << read_file(log_);
}

// ---- sd_notify --------------------------------------------------------------------------------

/// A daemon that reports to a NotifyListener, as under a Type=notify service.
class NotifyTest : public DaemonTest {
 protected:
  void spawn_daemon(const std::vector<std::string>& extra_flags,
                    const std::vector<std::string>& extra_env = {}) {
    std::vector<std::string> env{listener_.env()};
    env.insert(env.end(), extra_env.begin(), extra_env.end());
    daemon_.spawn(daemon_args(extra_flags, sock_), log_, log_, env);
  }

  NotifyListener listener_{dir_.file("notify.sock")};
};

TEST_F(NotifyTest, ReadyComesOnceTheSocketAcceptsStatusFollowsTheCountsAndStoppingEndsIt) {
  ASSERT_NO_FATAL_FAILURE(spawn_daemon({}));
  const auto ready = listener_.wait_for("READY=1", kStartTimeout);
  ASSERT_TRUE(ready.has_value()) << "no READY=1 within 10 s";
  // Connected at once, without retrying: READY=1 must not come before the socket accepts.
  const int fd = connect_unix(sock_);
  EXPECT_GE(fd, 0) << "READY=1 was sent but " << sock_ << " does not accept connections";
  if (fd >= 0) ::close(fd);
  EXPECT_TRUE(ready->has("STATUS=serving ")) << ready->text;

  std::string expected;
  {
    auto client = connect_client();
    client.execute("CREATE TABLE kv (k TEXT)");
    client.execute("INSERT INTO kv (k) VALUES ('a')");
    client.execute("INSERT INTO kv (k) VALUES ('b')");
    expected = "1 connections, 3 requests";
    // Refreshed every 2 s when the figures change.
    const auto status = listener_.wait_for(
        [&](const NotifyListener::Message& m) {
          return m.at > ready->at && m.has("STATUS=") && m.text.find(expected) != std::string::npos;
        },
        6s);
    std::string seen;
    for (const auto& m : listener_.messages()) seen += "[" + m.text + "] ";
    EXPECT_TRUE(status.has_value())
        << "no STATUS= line with \"" << expected << "\" in 6 s; got " << seen;
  }

  daemon_.signal(SIGTERM);
  const auto stopping = listener_.wait_for("STOPPING=1", kStopTimeout);
  ASSERT_TRUE(stopping.has_value()) << "no STOPPING=1 after SIGTERM";
  EXPECT_TRUE(stopping->has("STATUS=")) << stopping->text;
  const auto [status, killed] = daemon_.wait_or_kill(kStopTimeout);
  EXPECT_FALSE(killed);
  EXPECT_TRUE(exited_with(status, 0)) << describe_status(status);
}

/// A direct SQLite connection to the database, as another process writing the file would hold.
class SqliteHandle {
 public:
  explicit SqliteHandle(const std::string& path) {
    if (sqlite3_open_v2(path.c_str(), &db_, SQLITE_OPEN_READWRITE, nullptr) != SQLITE_OK) {
      ADD_FAILURE() << "cannot open " << path << ": " << sqlite3_errmsg(db_);
    }
  }
  ~SqliteHandle() { sqlite3_close_v2(db_); }
  SqliteHandle(const SqliteHandle&) = delete;
  SqliteHandle& operator=(const SqliteHandle&) = delete;

  ::testing::AssertionResult exec(const std::string& sql) {
    char* error = nullptr;
    if (sqlite3_exec(db_, sql.c_str(), nullptr, nullptr, &error) == SQLITE_OK) {
      return ::testing::AssertionSuccess();
    }
    auto failure = ::testing::AssertionFailure() << sql << ": " << (error ? error : "?");
    sqlite3_free(error);
    return failure;
  }

 private:
  sqlite3* db_ = nullptr;
};

TEST_F(NotifyTest, WatchdogPingsStopWhileTheWriterIsBlockedAndResumeWhenItMovesAgain) {
  // Pings every 150 ms; the writer waits up to 60 s for another process's write lock.
  ASSERT_NO_FATAL_FAILURE(spawn_daemon({"--busy-timeout", "60s"}, {"WATCHDOG_USEC=300000"}));
  ASSERT_TRUE(wait_until_serving(daemon_, sock_));
  auto client = connect_client();
  client.execute("CREATE TABLE kv (k TEXT)");

  int idle_pings = 0;
  EXPECT_TRUE(listener_.wait_for(
      [&](const NotifyListener::Message& m) { return m.has("WATCHDOG=1") && ++idle_pings >= 4; },
      5s))
      << "only " << idle_pings << " WATCHDOG=1 while idle in 5 s";

  // While the writer is stuck in SQLite's busy handler the pings stop: wait (bounded, however
  // long the writer takes to get there on a loaded machine) for a stretch of ten ping intervals
  // with none, which a watchdog that kept pinging never leaves.
  SqliteHandle blocker(db_);
  ASSERT_TRUE(blocker.exec("BEGIN IMMEDIATE"));
  const auto submitted = Clock::now();
  auto write = client.execute_async("INSERT INTO kv (k) VALUES ('blocked')");
  constexpr auto kQuiet = 1500ms;
  const auto give_up = submitted + 30s;
  std::vector<NotifyListener::Message> pings;
  bool quiet = false;
  while (!quiet && Clock::now() < give_up) {
    pings = listener_.between("WATCHDOG=1", submitted, Clock::time_point::max());
    quiet = Clock::now() - (pings.empty() ? submitted : pings.back().at) >= kQuiet;
    if (!quiet) std::this_thread::sleep_for(50ms);
  }
  std::string times;
  for (const auto& m : pings) {
    times += " +" + std::to_string((m.at - submitted) / 1ms) + "ms";
  }
  EXPECT_TRUE(quiet) << pings.size() << " WATCHDOG=1 while the writer was blocked, never "
                     << kQuiet / 1ms << " ms apart, at (after the write):" << times;
  EXPECT_EQ(write.wait_for(0s), std::future_status::timeout)
      << "the write did not wait for the other process's lock: the test proves nothing";

  ASSERT_TRUE(blocker.exec("COMMIT"));
  const auto released = Clock::now();
  ASSERT_EQ(write.wait_for(5s), std::future_status::ready)
      << "the write is still blocked after the other process committed";
  EXPECT_EQ(write.get(), 1);
  int resumed = 0;
  EXPECT_TRUE(listener_.wait_for(
      [&](const NotifyListener::Message& m) {
        return m.at > released && m.has("WATCHDOG=1") && ++resumed >= 2;
      },
      5s))
      << "WATCHDOG=1 did not resume once the writer moved again (" << resumed << " in 5 s)";
}

// ---- Service instances ------------------------------------------------------------------------

/// The service directories of an instance, under the test's temporary directory.
class InstanceTest : public DaemonTest {
 protected:
  void SetUp() override {
    for (const auto* d : {&state_, &run_, &conf_}) std::filesystem::create_directory(*d);
  }

  std::vector<std::string> env() const {
    return {"STATE_DIRECTORY=" + state_, "RUNTIME_DIRECTORY=" + run_,
            "CONFIGURATION_DIRECTORY=" + conf_};
  }

  /// Starts `pasyn-writerd --instance t1 <flags>` and returns its stats.
  pasyn::Report serve_instance(const std::vector<std::string>& flags) {
    std::vector<std::string> args{PASYN_WRITERD, "--instance", "t1", "--log-level", "warn"};
    args.insert(args.end(), flags.begin(), flags.end());
    daemon_.spawn(args, log_, log_, env());
    if (!wait_until_serving(daemon_, socket_)) {
      ADD_FAILURE() << "instance t1 does not serve " << socket_;
      return {};
    }
    return pasyn::MultiplexedClient(socket_, bounded_options()).stats();
  }

  std::string state_ = dir_.file("state");
  std::string run_ = dir_.file("run");
  std::string conf_ = dir_.file("conf");
  std::string socket_ = run_ + "/t1.sock";
};

TEST_F(InstanceTest, InstanceServesItsDirectoriesWithItsConfigFileAndFlagsBeatTheFile) {
  std::ofstream(conf_ + "/t1.conf") << "synchronous = \"normal\"\n";

  auto stats = serve_instance({});
  ASSERT_FALSE(stats.empty());
  EXPECT_EQ(std::get<std::string>(figure(stats, "database")), state_ + "/t1.sqlite");
  EXPECT_EQ(std::get<std::string>(figure(stats, "socket")), socket_);
  EXPECT_EQ(std::get<std::string>(figure(stats, "synchronous")), "normal")
      << "the instance's configuration file was not read";
  EXPECT_TRUE(path_exists(state_ + "/t1.sqlite"));
  stop_daemon();

  stats = serve_instance({"--synchronous", "full"});
  ASSERT_FALSE(stats.empty());
  EXPECT_EQ(std::get<std::string>(figure(stats, "synchronous")), "full")
      << "the configuration file beat the command line";
  stop_daemon();
}

TEST_F(InstanceTest, MissingConfigFileGivenExplicitlyIsAnError) {
  const std::string missing = dir_.file("missing.conf");
  const auto r = run_to_completion({PASYN_WRITERD, "--instance", "t1", "--config", missing}, dir_,
                                   env(), kStopTimeout);
  EXPECT_FALSE(r.killed) << "pasyn-writerd started without its configuration file";
  EXPECT_FALSE(exited_with(r.status, 0)) << describe_status(r.status);
  EXPECT_NE(r.err.find(missing), std::string::npos) << "stderr does not name the file: " << r.err;
  EXPECT_FALSE(path_exists(socket_)) << "it served anyway";
}

// A misspelt name in the configuration file is refused (a probe's `synchronus = "normal"` was
// ignored, and the daemon ran at synchronous=full).
TEST_F(InstanceTest, ANameInTheConfigFileThatIsNoFlagIsAnError) {
  std::ofstream(conf_ + "/t1.conf") << "synchronus = \"normal\"\n";
  const auto r = run_to_completion({PASYN_WRITERD, "--instance", "t1"}, dir_, env(), kStopTimeout);
  EXPECT_FALSE(r.killed) << "pasyn-writerd started with a misspelt flag in its file";
  EXPECT_TRUE(exited_with(r.status, 2)) << describe_status(r.status) << r.err;
  EXPECT_NE(r.err.find("synchronus"), std::string::npos) << r.err;
  EXPECT_FALSE(path_exists(state_ + "/t1.sqlite")) << "it opened the database anyway";
}

// Durations past 2^31 - 1 ms are refused: SQLite's busy timeout is an int, and a deadline that
// far overflows the clock (a probe's --busy-timeout 2147483648 turned the wait off; its
// --lock-wait 300000000min failed every wait at once).
TEST_F(InstanceTest, ADurationPastItsRangeIsRefusedAtStart) {
  for (const char* flag :
       {"--busy-timeout", "--lock-wait", "--statement-timeout", "--transaction-idle-timeout",
        "--handshake-timeout", "--drain-timeout"}) {
    for (const char* value : {"2147483648", "300000000min"}) {
      const auto r = run_to_completion({PASYN_WRITERD, "--instance", "t1", flag, value}, dir_,
                                       env(), kStopTimeout);
      EXPECT_TRUE(exited_with(r.status, 2)) << flag << " " << value << ": " << r.err;
      EXPECT_NE(r.err.find("2147483647"), std::string::npos) << flag << ": " << r.err;
    }
  }
  EXPECT_FALSE(path_exists(state_ + "/t1.sqlite"));
  // The largest is accepted.
  auto stats = serve_instance({"--busy-timeout", "2147483647", "--lock-wait", "2147483647"});
  EXPECT_FALSE(stats.empty());
  stop_daemon();
}

// SIGHUP (a closed terminal, a `kill -HUP` meant as "reload") neither kills the daemon at once
// nor stops it: it is logged and ignored.
TEST_F(InstanceTest, SighupIsIgnored) {
  ASSERT_FALSE(serve_instance({}).empty());
  pasyn::MultiplexedClient client(socket_, bounded_options());
  client.execute("CREATE TABLE t (x)");
  daemon_.signal(SIGHUP);
  ASSERT_TRUE(eventually(
      [&] { return read_file(log_).find("SIGHUP ignored") != std::string::npos; }, kReplyTimeout))
      << read_file(log_);
  EXPECT_EQ(client.execute("INSERT INTO t VALUES (1)"), 1);
  daemon_.signal(SIGHUP);
  EXPECT_TRUE(client.ping());
  stop_daemon();  // SIGTERM still stops it, with exit status 0
}

}  // namespace
