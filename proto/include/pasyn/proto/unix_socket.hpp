// Unix-socket helpers shared by the daemon, the client, the bench and the tests: a socket's
// address, a plain blocking connection, and a write that never blocks. Header-only (the tools
// that use it link the client library, not the proto library). Stateless, thread-safe.
#pragma once

#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <optional>
#include <string_view>

namespace pasyn::proto {

/// The address of the Unix socket at `path`, or nullopt when `path` is empty, holds a NUL or
/// does not fit `sun_path` with its terminator (never truncated: a shortened path names another
/// file).
inline std::optional<sockaddr_un> unix_address(std::string_view path) noexcept {
  sockaddr_un addr{};
  if (path.empty() || path.size() >= sizeof addr.sun_path ||
      path.find('\0') != std::string_view::npos) {
    return std::nullopt;
  }
  addr.sun_family = AF_UNIX;
  std::memcpy(addr.sun_path, path.data(), path.size());  // addr{} holds the terminator
  return addr;
}

/// A blocking, close-on-exec stream connection to the Unix socket at `path`: its descriptor, or
/// -1 with errno set (for a path unix_address() refuses: ENAMETOOLONG if it is too long, else
/// EINVAL). For tools and tests; the client library connects without blocking, within its
/// connect timeout (libclient/src/handshake.cpp).
inline int connect_unix(std::string_view path) noexcept {
  const auto addr = unix_address(path);
  if (!addr) {
    errno = path.size() >= sizeof addr->sun_path ? ENAMETOOLONG : EINVAL;
    return -1;
  }
  const int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return -1;
  if (::connect(fd, reinterpret_cast<const sockaddr*>(&*addr), sizeof *addr) != 0) {
    const int err = errno;
    ::close(fd);
    errno = err;
    return -1;
  }
  return fd;
}

/// Sends as much of [data, data + size) as the socket takes now; returns the bytes sent.
/// Stops at a full socket buffer or an error, which the caller's I/O thread then meets
/// (and reports) on its own write. Never raises SIGPIPE. How the daemon and the client send
/// from the thread that has the bytes, leaving only what the socket refuses to their I/O thread.
inline std::size_t send_nonblocking(int fd, const std::uint8_t* data, std::size_t size) {
  std::size_t sent = 0;
  while (sent < size) {
    const ssize_t n = ::send(fd, data + sent, size - sent, MSG_DONTWAIT | MSG_NOSIGNAL);
    if (n > 0) {
      sent += static_cast<std::size_t>(n);
    } else if (n < 0 && errno == EINTR) {
      continue;
    } else {
      break;
    }
  }
  return sent;
}

}  // namespace pasyn::proto
