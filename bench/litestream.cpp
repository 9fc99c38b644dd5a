// pasyn-bench-litestream: one writer's throughput with and without Litestream replicating
// (README "Surviving the loss of the machine"; the target: at least 0.5x). Each run starts the
// real pasyn-writerd with --checkpoint-mode external on a fresh database, with or without
// `litestream replicate` beside it (a file replica, the settings of systemd/litestream/
// litestream.yml: monitor-interval 100ms, max-checkpoint-page-count 2000; its first snapshot
// taken before the clock starts), and counts the INSERTs one client acknowledges, one
// at a time, in --seconds. The two kinds of run alternate, --rounds times each, so that a change
// of load on the machine hits both; a third kind, --checkpoint-mode internal (the default)
// without Litestream, is the baseline of today. It prints every run, the medians and the
// replicated run's ratio to each of the others.
//
//   pasyn-bench-litestream --litestream "$(scripts/litestream.sh)" [--seconds 3] [--rounds 3]
#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <optional>
#include <pasyn/pasyn.hpp>
#include <pasyn/proto/unix_socket.hpp>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

extern char** environ;

namespace {

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;
using namespace std::chrono_literals;

// A child process, its output appended to `log`; SIGTERM and reaped by the destructor.
class Child {
 public:
  Child(const std::vector<std::string>& args, const std::string& log) {
    posix_spawn_file_actions_t actions;
    posix_spawn_file_actions_init(&actions);
    posix_spawn_file_actions_addopen(&actions, 1, log.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0644);
    posix_spawn_file_actions_adddup2(&actions, 1, 2);
    std::vector<char*> argv;
    for (const auto& a : args) argv.push_back(const_cast<char*>(a.c_str()));
    argv.push_back(nullptr);
    const int rc = posix_spawn(&pid_, argv[0], &actions, nullptr, argv.data(), environ);
    posix_spawn_file_actions_destroy(&actions);
    if (rc != 0) throw std::runtime_error("cannot start " + args[0]);
  }
  ~Child() {
    ::kill(pid_, SIGTERM);
    int status = 0;
    ::waitpid(pid_, &status, 0);
  }
  Child(const Child&) = delete;
  Child& operator=(const Child&) = delete;
  bool exited() const {
    int status = 0;
    return ::waitpid(pid_, &status, WNOHANG) == pid_;
  }

 private:
  pid_t pid_ = -1;
};

bool connects(const std::string& socket) {
  const int fd = pasyn::proto::connect_unix(socket);
  if (fd < 0) return false;
  ::close(fd);
  return true;
}

template <typename Pred>
void wait_for(Pred done, std::chrono::seconds timeout, const std::string& what) {
  const auto deadline = Clock::now() + timeout;
  while (!done()) {
    if (Clock::now() > deadline) throw std::runtime_error("timed out waiting for " + what);
    std::this_thread::sleep_for(10ms);
  }
}

struct Options {
  std::string writerd = PASYN_WRITERD;
  std::string litestream;
  std::string synchronous = "full";
  double seconds = 3;
  int rounds = 3;
  std::string dir = "/tmp";
};

// Acknowledged INSERTs of one client in `seconds`, with --checkpoint-mode external and Litestream
// replicating or not, or with --checkpoint-mode internal (the default) alone.
std::int64_t run(const Options& o, bool replicate, bool external = true) {
  std::string tmpl = o.dir + "/pasyn-bench-litestream-XXXXXX";
  if (!::mkdtemp(tmpl.data())) throw std::runtime_error("mkdtemp in " + o.dir);
  const fs::path dir(tmpl);
  const std::string db = dir / "db.sqlite", socket = dir / "s.sock";
  std::int64_t rows = 0;
  {
    Child daemon(
        {o.writerd, "--database", db, "--socket", socket, "--checkpoint-mode",
         external ? "external" : "internal", "--synchronous", o.synchronous, "--log-level", "warn"},
        dir / "writerd.log");
    wait_for([&] { return connects(socket); }, 10s, "pasyn-writerd");
    pasyn::MultiplexedClient client(socket);
    client.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, v INTEGER, pad BLOB)");
    std::optional<Child> litestream;
    if (replicate) {
      std::ofstream(dir / "litestream.yml")
          << "dbs:\n  - path: " << db
          << "\n    monitor-interval: 100ms\n    max-checkpoint-page-count: 2000"
          << "\n    replicas:\n      - type: file\n        path: " << (dir / "replica").string()
          << "\n        sync-interval: 1s\n";
      litestream.emplace(
          std::vector<std::string>{o.litestream, "replicate", "-config", dir / "litestream.yml"},
          dir / "litestream.log");
      wait_for(
          [&] {
            std::error_code ec;
            return !fs::is_empty(dir / "replica" / "generations", ec) && !ec;
          },
          30s, "Litestream's first snapshot");
    }
    const pasyn::Blob pad(100, 'x');
    const auto end = Clock::now() + std::chrono::duration_cast<Clock::duration>(
                                        std::chrono::duration<double>(o.seconds));
    while (Clock::now() < end) {
      client.execute("INSERT INTO t (v, pad) VALUES (?, ?)", {rows, pad});
      ++rows;
    }
  }
  fs::remove_all(dir);
  return rows;
}

std::int64_t median(std::vector<std::int64_t> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

}  // namespace

int main(int argc, char** argv) {
  Options o;
  CLI::App app{"pasyn-bench-litestream: one writer's throughput with and without Litestream"};
  app.add_option("--litestream", o.litestream, "the litestream binary (scripts/litestream.sh)")
      ->required();
  app.add_option("--writerd", o.writerd, "the pasyn-writerd binary")->capture_default_str();
  app.add_option("--seconds", o.seconds, "duration of each run")->capture_default_str();
  app.add_option("--rounds", o.rounds, "runs of each kind")
      ->check(CLI::PositiveNumber)
      ->capture_default_str();
  app.add_option("--synchronous", o.synchronous, "the daemon's --synchronous")
      ->check(CLI::IsMember({"full", "normal"}))
      ->capture_default_str();
  app.add_option("--dir", o.dir, "where the databases go")->capture_default_str();
  CLI11_PARSE(app, argc, argv);
  try {
    std::vector<std::int64_t> internal, without, with;
    std::printf("one writer, %.1f s per run, --synchronous %s\n", o.seconds, o.synchronous.c_str());
    for (int r = 0; r < o.rounds; ++r) {
      internal.push_back(run(o, false, false));
      without.push_back(run(o, false));
      with.push_back(run(o, true));
      std::printf(
          "round %d: %lld writes with internal checkpoints, %lld external without Litestream, "
          "%lld external with Litestream replicating\n",
          r + 1, static_cast<long long>(internal.back()), static_cast<long long>(without.back()),
          static_cast<long long>(with.back()));
    }
    const auto ratio = [](std::int64_t a, std::int64_t b) {
      return b > 0 ? static_cast<double>(a) / static_cast<double>(b) : 0.0;
    };
    const auto i = median(internal), a = median(without), b = median(with);
    std::printf(
        "median: %lld internal, %lld external without Litestream, %lld external with Litestream\n"
        "replicated / external without Litestream: %.2fx\n"
        "replicated / internal (the default, no replication): %.2fx\n",
        static_cast<long long>(i), static_cast<long long>(a), static_cast<long long>(b),
        ratio(b, a), ratio(b, i));
    std::ifstream loadavg("/proc/loadavg");
    std::string load;
    std::getline(loadavg, load);
    std::printf("load average (1, 5, 15 min): %s\n", load.c_str());
  } catch (const std::exception& e) {
    std::fprintf(stderr, "pasyn-bench-litestream: %s\n", e.what());
    return 1;
  }
  return 0;
}
