// Connecting to pasyn-writerd: the non-blocking connect, the server's uid check and the
// protocol handshake, each bounded by a deadline. Used by MultiplexedClient::Impl.
#pragma once

#include <chrono>
#include <cstdint>
#include <pasyn/client.hpp>
#include <string>

namespace pasyn::detail {

/// A connected, non-blocking, close-on-exec descriptor to the socket at `path`, within
/// `deadline` (a full listen backlog is retried until then). When
/// `options.expect_server_uid` is set, the peer's SO_PEERCRED uid must match. Throws
/// ConnectionLostError or TimeoutError; nothing leaks on failure.
int connect_to_daemon(const std::string& path, const ClientOptions& options,
                      std::chrono::steady_clock::time_point deadline);

/// HELLO / HELLO_OK on `fd` within `deadline`; returns the daemon's maximum frame size. Throws
/// ConnectionLostError, TimeoutError or ProtocolError (another protocol version); the caller
/// closes `fd` then.
std::uint32_t handshake(int fd, const std::string& path, const ClientOptions& options,
                        std::chrono::steady_clock::time_point deadline,
                        std::uint64_t* server_capabilities = nullptr);

}  // namespace pasyn::detail
