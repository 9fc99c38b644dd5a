// pasyn-bench orchestrator (see orchestrator.hpp).
#include "orchestrator.hpp"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <pasyn/proto/unix_socket.hpp>
#include <sstream>
#include <thread>

namespace pasyn_bench {

std::string read_file(const fs::path& path) {
  std::ifstream in(path);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

int reap(pid_t pid, Clock::time_point deadline) {
  int status = 0;
  for (;;) {
    const pid_t r = ::waitpid(pid, &status, WNOHANG);
    if (r == pid) return status;
    if (r < 0 && errno != EINTR) return -1;
    if (Clock::now() >= deadline) {
      ::kill(pid, SIGKILL);
      while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
      }
      return status;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
  }
}

std::string describe_status(int status) {
  if (status == -1) return "vanished";
  if (WIFEXITED(status)) return "exit " + std::to_string(WEXITSTATUS(status));
  if (WIFSIGNALED(status)) return std::string("killed by signal ") + strsignal(WTERMSIG(status));
  return "status " + std::to_string(status);
}

pid_t spawn(const std::vector<std::string>& argv, int in_fd, int out_fd, int err_fd,
            int death_signal) {
  std::vector<char*> cargv;
  for (const auto& s : argv) cargv.push_back(const_cast<char*>(s.c_str()));
  cargv.push_back(nullptr);
  const pid_t parent = ::getpid();
  std::fflush(nullptr);
  const pid_t pid = ::fork();
  if (pid < 0) throw std::runtime_error("fork failed");
  if (pid == 0) {
    ::prctl(PR_SET_PDEATHSIG, death_signal);
    if (::getppid() != parent) ::_exit(127);
    ::signal(SIGPIPE, SIG_DFL);
    ::dup2(in_fd, 0);
    ::dup2(out_fd, 1);
    ::dup2(err_fd, 2);
    ::execv(cargv[0], cargv.data());
    ::_exit(127);
  }
  return pid;
}

WorkerProcess::WorkerProcess(const std::string& self, const std::vector<std::string>& args) {
  kind_ = args.empty() ? "" : args.front();
  int in[2], out[2];
  if (::pipe2(in, O_CLOEXEC) != 0) throw std::runtime_error("pipe failed");
  if (::pipe2(out, O_CLOEXEC) != 0) {
    ::close(in[0]);
    ::close(in[1]);
    throw std::runtime_error("pipe failed");
  }
  std::vector<std::string> argv{self, "--worker"};
  argv.insert(argv.end(), args.begin(), args.end());
  try {
    pid_ = spawn(argv, in[0], out[1], 2, SIGKILL);
  } catch (...) {
    for (int fd : {in[0], in[1], out[0], out[1]}) ::close(fd);
    throw;
  }
  ::close(in[0]);
  ::close(out[1]);
  to_ = in[1];
  from_ = out[0];
}

WorkerProcess::~WorkerProcess() {
  if (to_ >= 0) ::close(to_);
  if (from_ >= 0) ::close(from_);
  if (pid_ > 0) reap(pid_, Clock::now());  // still running only on an error path: kill it
}

bool WorkerProcess::has_line(std::string_view line) const {
  // A whole line, ended by its newline. (Scanned in place: the concatenations this replaced
  // tripped g++ 12's -Wrestrict false positive at -O3.)
  const std::string_view out(out_);
  for (std::size_t at = 0;;) {
    const std::size_t end = out.find('\n', at);
    if (end == std::string_view::npos) return false;
    if (out.substr(at, end - at) == line) return true;
    at = end + 1;
  }
}

void WorkerProcess::read_some() {
  char buf[65536];
  const ssize_t n = ::read(from_, buf, sizeof buf);
  if (n > 0) {
    out_.append(buf, static_cast<std::size_t>(n));
  } else if (n == 0 || errno != EINTR) {
    eof_ = true;
  }
}

void WorkerProcess::go() {
  const char c = 'g';
  if (::write(to_, &c, 1) != 1) throw std::runtime_error("worker " + kind_ + " went away");
}

int WorkerProcess::wait(Clock::time_point deadline) {
  const int status = reap(pid_, deadline);
  pid_ = -1;
  return status;
}

void await_line(std::vector<std::unique_ptr<WorkerProcess>>& workers, std::string_view line,
                Clock::time_point deadline) {
  for (;;) {
    std::vector<pollfd> fds;
    std::vector<WorkerProcess*> owners;
    for (auto& w : workers) {
      if (w->has_line(line)) continue;
      if (w->eof()) {
        const int status = w->wait(Clock::now() + std::chrono::seconds(5));
        throw std::runtime_error("worker " + w->kind() + " ended before '" + std::string(line) +
                                 "' (" + describe_status(status) + ")");
      }
      fds.push_back({w->from(), POLLIN, 0});
      owners.push_back(w.get());
    }
    if (fds.empty()) return;
    const auto left =
        std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now());
    if (left.count() <= 0) {
      throw std::runtime_error("workers did not report '" + std::string(line) + "' in time");
    }
    const int n = ::poll(fds.data(), fds.size(),
                         static_cast<int>(std::min<std::int64_t>(left.count(), 1000)));
    if (n < 0 && errno != EINTR) throw std::runtime_error("poll failed");
    for (std::size_t i = 0; n > 0 && i < fds.size(); ++i) {
      if (fds[i].revents != 0) owners[i]->read_some();
    }
  }
}

std::vector<WorkerResult> run_workers(Context& ctx,
                                      const std::vector<std::vector<std::string>>& specs,
                                      double expected_seconds) {
  std::vector<std::unique_ptr<WorkerProcess>> workers;
  for (const auto& spec : specs) workers.push_back(std::make_unique<WorkerProcess>(ctx.self, spec));
  await_line(workers, "ready", Clock::now() + std::chrono::seconds(120));
  for (auto& w : workers) w->go();
  await_line(
      workers, "done",
      Clock::now() + std::chrono::duration_cast<Clock::duration>(Seconds(expected_seconds + 180)));
  std::vector<WorkerResult> results;
  for (auto& w : workers) {
    const int status = w->wait(Clock::now() + std::chrono::seconds(30));
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
      throw std::runtime_error("worker " + w->kind() + " failed (" + describe_status(status) + ")");
    }
    results.push_back(w->result());
  }
  return results;
}

bool socket_accepts(const std::string& path) {
  const int fd = pasyn::proto::connect_unix(path);
  if (fd < 0) return false;
  ::close(fd);
  return true;
}

Daemon::Daemon(Context& ctx, const fs::path& dir, const std::string& database, bool full,
               const std::vector<std::string>& flags)
    : ctx_(ctx), socket_((dir / "pasyn.sock").string()), log_(dir / "daemon.log") {
  std::vector<std::string> argv{ctx.daemon,
                                "--database",
                                database,
                                "--socket",
                                socket_,
                                "--synchronous",
                                full ? "full" : "normal",
                                "--log-level",
                                "warn"};
  argv.insert(argv.end(), flags.begin(), flags.end());
  const int log_fd = ::open(log_.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  const int null_fd = ::open("/dev/null", O_RDONLY | O_CLOEXEC);
  if (log_fd < 0 || null_fd < 0) throw std::runtime_error("cannot open the daemon's log");
  try {
    pid_ = spawn(argv, null_fd, log_fd, log_fd, SIGTERM);
  } catch (...) {
    ::close(log_fd);
    ::close(null_fd);
    throw;
  }
  ::close(log_fd);
  ::close(null_fd);
  const auto deadline = Clock::now() + std::chrono::seconds(15);
  while (!socket_accepts(socket_)) {
    int status = 0;
    if (::waitpid(pid_, &status, WNOHANG) == pid_) {
      pid_ = -1;
      throw std::runtime_error("pasyn-writerd exited at start (" + describe_status(status) +
                               "): " + read_file(log_));
    }
    if (Clock::now() >= deadline) {
      stop();
      throw std::runtime_error("pasyn-writerd did not accept connections within 15 s");
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
  }
}

double Daemon::peak_rss_mib() const {
  std::ifstream in("/proc/" + std::to_string(pid_) + "/status");
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind("VmHWM:", 0) == 0) return std::stod(line.substr(6)) / 1024.0;
  }
  return kNaN;
}

void Daemon::stop() {
  if (pid_ <= 0) return;
  ::kill(pid_, SIGTERM);
  const int status = reap(pid_, Clock::now() + std::chrono::seconds(60));
  pid_ = -1;
  std::string problem;
  if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) problem = describe_status(status);
  std::string log = read_file(log_);
  if (!log.empty()) {
    std::replace(log.begin(), log.end(), '\n', ' ');
    problem += (problem.empty() ? "" : ", ") + std::string("log: ") + log.substr(0, 300);
  }
  if (!problem.empty() && ctx_.daemon_problems.size() < 1000) {
    ctx_.daemon_problems += "[pasyn-writerd " + problem + "] ";
  }
}

}  // namespace pasyn_bench
