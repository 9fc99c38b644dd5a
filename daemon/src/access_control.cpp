#include "access_control.hpp"

#include <grp.h>
#include <pwd.h>
#include <unistd.h>

#include <algorithm>

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

namespace {

constexpr uid_t kUnknownUid = static_cast<uid_t>(-1);

}  // namespace

const char* to_string(Role role) noexcept {
  switch (role) {
    case Role::kReadOnly:
      return "read-only";
    case Role::kWriter:
      return "writer";
    case Role::kAdmin:
      return "admin";
  }
  return "?";
}

PeerAccess assess_peer(const Config& c, uid_t uid, gid_t gid) {
  std::optional<std::vector<gid_t>> groups;  // looked up once, when a gid list needs them
  const auto listed = [&](const std::vector<std::uint32_t>& uids,
                          const std::vector<std::uint32_t>& gids) {
    if (uid == kUnknownUid) return false;
    if (std::find(uids.begin(), uids.end(), uid) != uids.end()) return true;
    if (gids.empty()) return false;
    if (!groups) groups = groups_of(uid, gid);
    return std::any_of(groups->begin(), groups->end(), [&](gid_t g) {
      return std::find(gids.begin(), gids.end(), g) != gids.end();
    });
  };
  PeerAccess access;
  if (listed(c.read_only_uids, c.read_only_gids)) {
    access.role = Role::kReadOnly;
    return access;
  }
  const bool restricted = !c.allow_uids.empty() || !c.allow_gids.empty();
  if (restricted && uid != ::geteuid() && !listed(c.allow_uids, c.allow_gids)) {
    access.refusal = "uid " + std::to_string(uid) +
                     " may not use this pasyn-writerd (not in --allow-uid or --allow-gid)";
    return access;
  }
  const bool admin = c.admin_uids.empty() && c.admin_gids.empty()
                         ? uid != kUnknownUid && (uid == ::geteuid() || uid == 0)
                         : listed(c.admin_uids, c.admin_gids);
  access.role = admin ? Role::kAdmin : Role::kWriter;
  return access;
}

bool is_admin_request(proto::MsgType type) noexcept {
  return type == proto::MsgType::kShutdown || type == proto::MsgType::kCheckpoint ||
         type == proto::MsgType::kBackup;
}

std::optional<std::string> refuse_admin_request(proto::MsgType type, bool admin) {
  if (admin || !is_admin_request(type)) return std::nullopt;
  return std::string(proto::to_string(type)) +
         " is an administrative request: only peers in --admin-uid/--admin-gid (by default the "
         "daemon's own user and root) may send it";
}

}  // namespace pasyn::server
