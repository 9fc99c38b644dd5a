// A write that never blocks (shared by the daemon and the client): how they send from the thread
// that has the bytes, leaving only what the socket refuses to their I/O thread.
#pragma once

#include <sys/socket.h>

#include <cerrno>
#include <cstddef>
#include <cstdint>

namespace pasyn::proto {

/// Sends as much of [data, data + size) as the socket takes now; returns the bytes sent.
/// Stops at a full socket buffer or an error, which the caller's I/O thread then meets
/// (and reports) on its own write. Never raises SIGPIPE.
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
