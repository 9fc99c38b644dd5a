// Admission at accept (admission.hpp).
#include "admission.hpp"

#include <grp.h>
#include <pwd.h>
#include <unistd.h>

#include <algorithm>

#include "socket_send.hpp"

namespace pasyn::server {

std::vector<gid_t> groups_of(uid_t uid, gid_t gid) {
  std::vector<gid_t> groups{gid};
  passwd pw{}, *found = nullptr;
  std::vector<char> buf(16384);
  if (::getpwuid_r(uid, &pw, buf.data(), buf.size(), &found) != 0 || !found) return groups;
  int n = 64;
  std::vector<gid_t> all(static_cast<std::size_t>(n));
  if (::getgrouplist(pw.pw_name, gid, all.data(), &n) < 0) {
    all.resize(static_cast<std::size_t>(n));
    if (::getgrouplist(pw.pw_name, gid, all.data(), &n) < 0) return groups;
  }
  all.resize(static_cast<std::size_t>(n));
  return all;
}

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
  if (config.allow_uids.empty() && config.allow_gids.empty()) return a;
  // An allow-list: only a listed uid, a member of a listed group, the daemon's own user, or a
  // peer given the read-only role (admitted with that role, see Session).
  if (a.peer.uid != static_cast<uid_t>(-1)) {
    if (a.peer.uid == ::geteuid()) return a;
    const std::vector<gid_t> groups = groups_of(a.peer.uid, a.peer.gid);
    const auto listed = [&](const std::vector<std::uint32_t>& uids,
                            const std::vector<std::uint32_t>& gids) {
      if (std::find(uids.begin(), uids.end(), a.peer.uid) != uids.end()) return true;
      return std::any_of(groups.begin(), groups.end(), [&](gid_t g) {
        return std::find(gids.begin(), gids.end(), g) != gids.end();
      });
    };
    if (listed(config.allow_uids, config.allow_gids) ||
        listed(config.read_only_uids, config.read_only_gids)) {
      return a;
    }
  }
  a.code = proto::PasynCode::kPermission;
  a.refusal = "uid " + std::to_string(a.peer.uid) +
              " may not use this pasyn-writerd (not in --allow-uid or --allow-gid)";
  a.log_line = "connection" + describe(a.peer) + " refused: uid " + std::to_string(a.peer.uid) +
               " (gid " + std::to_string(a.peer.gid) + ") is not allowed";
  return a;
}

void send_refusal(int fd, const Admission& admission) {
  std::vector<std::uint8_t> frame;
  proto::encode_pasyn_error(frame, 0, admission.code, admission.refusal);
  send_nonblocking(fd, frame.data(), frame.size());
}

}  // namespace pasyn::server
