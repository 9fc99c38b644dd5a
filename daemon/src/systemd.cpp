// sd-daemon calls of pasyn-writerd. See systemd.hpp.
#include "systemd.hpp"

#include <sys/socket.h>
#include <sys/stat.h>
#include <systemd/sd-daemon.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>

#include <spdlog/sinks/systemd_sink.h>

#include "log.hpp"
#include "paths.hpp"

namespace pasyn::server::systemd {

int take_listen_fd() {
  char** names = nullptr;
  const int n = sd_listen_fds_with_names(/*unset_environment=*/1, &names);
  if (names) {
    for (int i = 0; names[i]; ++i) std::free(names[i]);
    std::free(names);
  }
  if (n < 0) {
    throw StartError(StartError::Kind::kSocket, std::string("cannot read the sockets systemd "
                                                            "passed: ") +
                                                    std::strerror(-n));
  }
  if (n == 0) return -1;
  if (n > 1) {
    for (int i = 0; i < n; ++i) ::close(SD_LISTEN_FDS_START + i);
    throw StartError(StartError::Kind::kSocket,
                     "systemd passed " + std::to_string(n) +
                         " sockets; pasyn-writerd serves exactly one (ListenStream= once)");
  }
  const int fd = SD_LISTEN_FDS_START;
  if (sd_is_socket_unix(fd, SOCK_STREAM, /*listening=*/1, nullptr, 0) <= 0) {
    ::close(fd);
    throw StartError(StartError::Kind::kSocket,
                     "the socket systemd passed is not a listening Unix stream socket "
                     "(use ListenStream=/path in the .socket unit)");
  }
  return fd;
}

void notify(const std::string& state) { sd_notify(/*unset_environment=*/0, state.c_str()); }

std::optional<std::chrono::microseconds> watchdog_interval() {
  std::uint64_t usec = 0;
  if (sd_watchdog_enabled(/*unset_environment=*/0, &usec) <= 0 || usec == 0) return std::nullopt;
  return std::chrono::microseconds(usec);
}

bool stderr_is_journal() {
  const char* stream = std::getenv("JOURNAL_STREAM");  // "<device>:<inode>"
  if (!stream) return false;
  struct stat st {};
  if (::fstat(STDERR_FILENO, &st) != 0) return false;
  unsigned long long dev = 0, ino = 0;
  if (std::sscanf(stream, "%llu:%llu", &dev, &ino) != 2) return false;
  return dev == st.st_dev && ino == st.st_ino;
}

void log_to_journal() {
  auto& logger = log();
  logger.sinks().clear();
  logger.sinks().push_back(std::make_shared<spdlog::sinks::systemd_sink_mt>("pasyn-writerd"));
}

namespace {

std::string directory(const char* env, const char* fallback) {
  const char* value = std::getenv(env);
  if (!value || !*value) return fallback;
  const std::string_view list(value);  // colon-separated when the unit names several
  return std::string(list.substr(0, list.find(':')));
}

}  // namespace

std::string state_directory() { return directory("STATE_DIRECTORY", "/var/lib/pasyn"); }
std::string runtime_directory() { return directory("RUNTIME_DIRECTORY", "/run/pasyn"); }
std::string configuration_directory() { return directory("CONFIGURATION_DIRECTORY", "/etc/pasyn"); }

}  // namespace pasyn::server::systemd
