// pasyn-bench worker side: argument helpers, socket helpers and the worker dispatch.
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>

#include "worker.hpp"

namespace pasyn_bench {

const std::string& arg(const Args& a, const std::string& key) {
  const auto it = a.find(key);
  if (it == a.end()) throw std::runtime_error("worker argument missing: " + key);
  return it->second;
}
std::int64_t arg_int(const Args& a, const std::string& key) { return std::stoll(arg(a, key)); }
double arg_double(const Args& a, const std::string& key) { return std::stod(arg(a, key)); }

pasyn::ClientOptions client_options() {
  pasyn::ClientOptions o;
  o.request_timeout = std::chrono::duration_cast<std::chrono::milliseconds>(kCallTimeout);
  return o;
}

bool read_exact(int fd, char* buf, std::size_t n, bool polling) {
  std::size_t got = 0;
  while (got < n) {
    const ssize_t r = ::recv(fd, buf + got, n - got, polling ? MSG_DONTWAIT : 0);
    if (r > 0) {
      got += static_cast<std::size_t>(r);
    } else if (r < 0 &&
               (errno == EINTR || (polling && (errno == EAGAIN || errno == EWOULDBLOCK)))) {
      continue;
    } else {
      return false;
    }
  }
  return true;
}

bool write_all(int fd, const char* buf, std::size_t n) {
  std::size_t sent = 0;
  while (sent < n) {
    const ssize_t r = ::send(fd, buf + sent, n - sent, MSG_NOSIGNAL);
    if (r > 0) {
      sent += static_cast<std::size_t>(r);
    } else if (r < 0 && errno == EINTR) {
      continue;
    } else {
      return false;
    }
  }
  return true;
}

int worker_main(int argc, char** argv) {
  const std::string kind = argc > 2 ? argv[2] : "";
  Args a;
  for (int i = 3; i < argc; ++i) {
    const std::string kv = argv[i];
    const auto eq = kv.find('=');
    if (eq != std::string::npos) a[kv.substr(0, eq)] = kv.substr(eq + 1);
  }
  try {
    if (kind == "writers") {
      worker_writers(a);
    } else if (kind == "clients") {
      worker_clients(a);
    } else if (kind == "inflight") {
      worker_inflight(a);
    } else if (kind == "many") {
      worker_many(a);
    } else if (kind == "direct_txn") {
      worker_direct_txn(a);
    } else if (kind == "point_select") {
      worker_point_select(a);
    } else if (kind == "round_trip") {
      worker_round_trip(a);
    } else if (kind == "seed") {
      worker_seed(a);
    } else if (kind == "echo_server") {
      worker_echo_server(a);
    } else if (kind == "echo_clients") {
      worker_echo_clients(a);
    } else if (kind == "commit_txns") {
      worker_commit_txns(a);
    } else if (kind == "subscriber") {
      worker_subscriber(a);
    } else {
      throw std::runtime_error("unknown worker kind '" + kind + "'");
    }
  } catch (const std::exception& e) {
    std::fprintf(stderr, "pasyn-bench worker %s: %s\n", kind.c_str(), e.what());
    return 1;
  }
  return 0;
}

}  // namespace pasyn_bench
