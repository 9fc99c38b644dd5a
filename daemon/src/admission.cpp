// Admission at accept (admission.hpp).
#include "admission.hpp"

#include <unistd.h>

#include <pasyn/proto/unix_socket.hpp>

namespace pasyn::server {

std::string describe(const ucred& peer) {
  if (peer.uid == static_cast<uid_t>(-1)) return "";
  return " from pid " + std::to_string(peer.pid) + " uid " + std::to_string(peer.uid);
}

Admission admit(const Config& config, int fd, std::size_t open) {
  Admission a;
  socklen_t len = sizeof a.peer;
  if (::getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &a.peer, &len) != 0) {
    a.peer.pid = 0;
    a.peer.uid = static_cast<uid_t>(-1);
    a.peer.gid = static_cast<gid_t>(-1);
  }
  if (open >= config.max_connections) {
    a.code = proto::PasynCode::kLimit;
    a.refusal = "pasyn-writerd has reached its connection limit (--max-connections " +
                std::to_string(config.max_connections) + "); try again later";
    a.log_line = "connection" + describe(a.peer) + " refused: " + std::to_string(open) +
                 " connections open (--max-connections)";
    return a;
  }
  // The allow-list, with the same rules as the session's role (access_control.hpp): a listed
  // uid, a member of a listed group, the daemon's own user, or a read-only peer.
  auto access = assess_peer(config, a.peer.uid, a.peer.gid);
  if (!access.refusal) return a;
  a.code = proto::PasynCode::kPermission;
  a.refusal = std::move(*access.refusal);
  a.log_line = "connection" + describe(a.peer) + " refused: uid " + std::to_string(a.peer.uid) +
               " (gid " + std::to_string(a.peer.gid) + ") is not allowed";
  return a;
}

void send_refusal(int fd, const Admission& admission) {
  std::vector<std::uint8_t> frame;
  proto::encode_pasyn_error(frame, 0, admission.code, admission.refusal);
  proto::send_nonblocking(fd, frame.data(), frame.size());
}

}  // namespace pasyn::server
