// Admission at accept: who may hold a connection, decided from the peer's credentials before a
// single byte of it is read (PROTOCOL.md §3).
#pragma once

#include <sys/socket.h>
#include <sys/types.h>

#include <cstddef>
#include <string>
#include <vector>

#include "access_control.hpp"
#include "config.hpp"

namespace pasyn::server {

/// The verdict on one accepted connection.
struct Admission {
  ucred peer{};         // SO_PEERCRED; uid and gid are -1 when it could not be read
  std::string refusal;  // empty: admitted
  proto::PasynCode code = proto::PasynCode::kPermission;  // when refused
  std::string log_line;  // why, with the peer's pid and uid, for the daemon's log

  bool admitted() const noexcept { return refusal.empty(); }
};

/// Checks the connection limit (`open` connections already admitted against
/// --max-connections) and the --allow-uid/--allow-gid lists. The daemon's own uid is always
/// allowed. Thread-safety: reentrant; may look the peer's groups up (getgrouplist).
Admission admit(const Config& config, int fd, std::size_t open);

/// Writes the refusal as an ERROR frame (request id 0) without blocking; the caller closes the
/// descriptor next. A peer that cannot take the few bytes at once just sees the close.
void send_refusal(int fd, const Admission& admission);

/// " from pid P uid U" for log lines ("" when the credentials are unknown).
std::string describe(const ucred& peer);

}  // namespace pasyn::server
