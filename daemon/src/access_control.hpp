// Who a peer is to the daemon: its role, from its credentials (SO_PEERCRED) at accept time, and
// what that role may send (PROTOCOL.md §3, SECURITY.md).
#pragma once

#include <sys/types.h>

#include <optional>
#include <string>
#include <vector>

#include <pasyn/proto/codec.hpp>

#include "authorizer.hpp"
#include "config.hpp"

namespace pasyn::server {

/// A connection's Role (authorizer.hpp): kReadOnly (--read-only-uid/--read-only-gid: PING,
/// STATS and read-only statements), kWriter (any request but the administrative ones) or kAdmin
/// (also SHUTDOWN, CHECKPOINT, BACKUP: --admin-uid/--admin-gid). Every request carries its
/// connection's role (Request::role), so that the writer can check it again.
const char* to_string(Role role) noexcept;

/// The primary and supplementary groups of a user (the peer's process may have dropped some;
/// SO_PEERCRED only tells its uid and primary gid).
std::vector<gid_t> groups_of(uid_t uid, gid_t gid);

/// The outcome of looking at a peer's credentials.
struct PeerAccess {
  Role role = Role::kWriter;
  /// Set when the peer may not use the daemon at all: it is told this (PERMISSION) after its
  /// HELLO and closed.
  std::optional<std::string> refusal;
};

/// The role of the peer `uid`/`gid` under `config`'s lists:
/// * refused when --allow-uid/--allow-gid are set and it is in neither (nor the daemon's uid);
/// * read_only when it is in --read-only-uid/--read-only-gid (whatever the other lists say);
/// * admin when it is in --admin-uid/--admin-gid, or, when both are empty, when it is the
///   daemon's own effective uid or root;
/// * writer otherwise.
/// A gid list matches the user's primary and supplementary groups. An unknown peer (uid -1:
/// SO_PEERCRED failed) can only be a writer or refused, never admin.
PeerAccess assess_peer(const Config& config, uid_t uid, gid_t gid);

/// True for the administrative requests: SHUTDOWN, CHECKPOINT and BACKUP.
bool is_admin_request(proto::MsgType type) noexcept;

/// The PERMISSION message for `type` refused to a peer of `role`, or nullopt if the role
/// allows the type. Checks the administrative requests only (the read-only role's statement
/// checks are the writer's: they need the prepared statement).
std::optional<std::string> refuse_admin_request(proto::MsgType type, bool admin);

}  // namespace pasyn::server
