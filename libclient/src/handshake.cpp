// Connecting to pasyn-writerd and the protocol handshake (see handshake.hpp).
#include "handshake.hpp"

#include <poll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <pasyn/errors.hpp>
#include <pasyn/proto/codec.hpp>
#include <pasyn/proto/unix_socket.hpp>
#include <vector>

#include "reply.hpp"

namespace pasyn::detail {
namespace {

// ClientOptions::expect_server_uid: the peer's credentials, as the kernel recorded them when
// the server called listen(). Closes `fd` and throws on a mismatch.
void check_server_uid(int fd, const std::string& path, const ClientOptions& options) {
  if (!options.expect_server_uid) return;
  ucred cred{};
  socklen_t len = sizeof cred;
  if (::getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) != 0) {
    const int err = errno;
    ::close(fd);
    throw ConnectionLostError("cannot read the credentials of the server at " + path + ": " +
                              std::strerror(err));
  }
  if (cred.uid != *options.expect_server_uid) {
    ::close(fd);
    throw ConnectionLostError("the server at " + path + " runs as uid " + std::to_string(cred.uid) +
                              ", not the expected uid " +
                              std::to_string(*options.expect_server_uid) +
                              " (ClientOptions::expect_server_uid); refusing to use it");
  }
}

// Waits until the descriptor is ready for `events`, or throws once `deadline` has passed.
void wait_ready(int fd, short events, const std::string& path, const ClientOptions& options,
                std::chrono::steady_clock::time_point deadline) {
  for (;;) {
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
        deadline - std::chrono::steady_clock::now());
    if (left.count() <= 0) {
      throw TimeoutError("no handshake from pasyn-writerd at " + path + " within " +
                         std::to_string(options.connect_timeout.count()) + " ms");
    }
    pollfd p{fd, events, 0};
    const int rc = ::poll(&p, 1, static_cast<int>(left.count()));
    if (rc > 0) return;
    if (rc < 0 && errno != EINTR) {
      throw ConnectionLostError(std::string("poll(): ") + std::strerror(errno));
    }
  }
}

}  // namespace

// Connects without blocking past `deadline` (a Unix socket whose listen backlog is full
// refuses with EAGAIN until the daemon accepts: retry until the deadline).
int connect_to_daemon(const std::string& path, const ClientOptions& options,
                      std::chrono::steady_clock::time_point deadline) {
  const auto address = proto::unix_address(path);
  if (!address) {
    throw ConnectionLostError("not a Unix socket path (empty, holding a NUL byte, or over " +
                              std::to_string(sizeof address->sun_path - 1) + " bytes): " + path);
  }
  const sockaddr_un& addr = *address;
  const int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) throw ConnectionLostError(std::string("socket(): ") + std::strerror(errno));
  for (;;) {
    if (::connect(fd, reinterpret_cast<const sockaddr*>(&addr), sizeof addr) == 0) {
      check_server_uid(fd, path, options);
      return fd;
    }
    const int err = errno;
    if (err == EINTR) continue;
    if ((err == EAGAIN || err == EINPROGRESS) && std::chrono::steady_clock::now() < deadline) {
      ::poll(nullptr, 0, 5);
      continue;
    }
    ::close(fd);
    if (err == EAGAIN || err == EINPROGRESS) {
      throw TimeoutError("pasyn-writerd at " + path + " accepted no connection within " +
                         std::to_string(options.connect_timeout.count()) + " ms");
    }
    throw ConnectionLostError("cannot connect to pasyn-writerd at " + path + ": " +
                              std::strerror(err));
  }
}

// HELLO / HELLO_OK on the non-blocking socket, all of it bounded by `deadline`.
// Returns the daemon's maximum frame size.
std::uint32_t handshake(int fd, const std::string& path, const ClientOptions& options,
                        std::chrono::steady_clock::time_point deadline,
                        std::uint64_t* server_capabilities) {
  std::vector<std::uint8_t> hello;
  proto::Hello request;
  // The *_named calls (PROTOCOL.md §4.1) and the change feed (§8).
  request.capabilities = proto::kCapNamedParams | proto::kCapChangeFeed;
  proto::encode_hello(hello, request);
  std::size_t sent = 0;
  while ((sent += proto::send_nonblocking(fd, hello.data() + sent, hello.size() - sent)) <
         hello.size()) {
    // A daemon that refuses the peer at accept writes its ERROR and closes before reading
    // anything: the HELLO then meets EPIPE, and the reply is read below.
    if (errno == EPIPE || errno == ECONNRESET) break;
    if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) {
      throw ConnectionLostError("handshake with pasyn-writerd at " + path +
                                " failed: " + std::strerror(errno));
    }
    wait_ready(fd, POLLOUT, path, options, deadline);
  }
  proto::FrameDecoder decoder(proto::kDefaultMaxFrame);
  proto::FrameView frame;
  auto status = proto::FrameDecoder::Status::kNeedMore;
  while ((status = decoder.next(frame)) == proto::FrameDecoder::Status::kNeedMore) {
    auto buf = decoder.prepare(4096);
    const ssize_t n = ::recv(fd, buf.data(), buf.size(), MSG_DONTWAIT);
    if (n > 0) {
      decoder.commit(static_cast<std::size_t>(n));
    } else if (n == 0) {
      throw ConnectionLostError("pasyn-writerd at " + path +
                                " closed the connection during the handshake");
    } else if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR) {
      wait_ready(fd, POLLIN, path, options, deadline);
    } else {
      throw ConnectionLostError("handshake with pasyn-writerd at " + path +
                                " failed: " + std::strerror(errno));
    }
  }
  if (status == proto::FrameDecoder::Status::kError) throw_protocol(decoder.error());
  expect(frame, proto::MsgType::kHelloOk);
  proto::HelloOk ok;
  std::string why;
  if (!proto::decode_hello_ok(frame.payload, ok, why)) throw_protocol(why);
  if (ok.version != proto::kVersion) {
    throw ProtocolError("pasyn-writerd speaks protocol version " + std::to_string(ok.version) +
                        ", this client " + std::to_string(proto::kVersion));
  }
  if (server_capabilities) *server_capabilities = ok.capabilities;
  return ok.max_frame;
}

}  // namespace pasyn::detail
