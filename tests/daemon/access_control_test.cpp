// Role assignment from peer credentials and the admin-only requests
// (daemon/src/access_control.cpp), and BACKUP's name rule (daemon/src/backup.cpp).
#include <gtest/gtest.h>
#include <unistd.h>

#include "access_control.hpp"
#include "backup.hpp"

namespace {

using pasyn::proto::MsgType;
using pasyn::server::assess_peer;
using pasyn::server::Config;
using pasyn::server::Role;

constexpr uid_t kUnknown = static_cast<uid_t>(-1);
// Ids no test machine gives its own process (the daemon's euid is always an admin by default).
constexpr uid_t kStranger = 4000001;
constexpr gid_t kStrangerGroup = 4000002;

TEST(AssessPeer, ByDefaultOnlyTheDaemonsOwnUidAndRootAreAdmins) {
  const Config c;
  EXPECT_EQ(assess_peer(c, ::geteuid(), ::getegid()).role, Role::kAdmin);
  EXPECT_EQ(assess_peer(c, 0, 0).role, Role::kAdmin);
  EXPECT_EQ(assess_peer(c, kStranger, kStrangerGroup).role, Role::kWriter);
  EXPECT_FALSE(assess_peer(c, kStranger, kStrangerGroup).refusal);
}

TEST(AssessPeer, AdminListsReplaceTheDefault) {
  Config c;
  c.admin_uids = {kStranger};
  EXPECT_EQ(assess_peer(c, kStranger, kStrangerGroup).role, Role::kAdmin);
  EXPECT_EQ(assess_peer(c, kStranger + 1, kStrangerGroup).role, Role::kWriter);
  EXPECT_EQ(assess_peer(c, 0, 0).role, Role::kWriter);  // root too
  Config g;
  g.admin_gids = {kStrangerGroup};  // the primary gid counts (the user has no passwd entry)
  EXPECT_EQ(assess_peer(g, kStranger, kStrangerGroup).role, Role::kAdmin);
  EXPECT_EQ(assess_peer(g, kStranger, kStrangerGroup + 1).role, Role::kWriter);
}

TEST(AssessPeer, ReadOnlyWinsOverAdminAndAnUnknownPeerIsNeverAdmin) {
  Config c;
  c.admin_uids = {kStranger};
  c.read_only_uids = {kStranger};
  EXPECT_EQ(assess_peer(c, kStranger, kStrangerGroup).role, Role::kReadOnly);
  Config d;
  EXPECT_NE(assess_peer(d, kUnknown, static_cast<gid_t>(-1)).role, Role::kAdmin);
  d.admin_gids = {static_cast<std::uint32_t>(-1)};
  EXPECT_NE(assess_peer(d, kUnknown, static_cast<gid_t>(-1)).role, Role::kAdmin);
}

TEST(AssessPeer, AllowListsStillRefuseOutsiders) {
  Config c;
  c.allow_uids = {kStranger};
  EXPECT_FALSE(assess_peer(c, kStranger, kStrangerGroup).refusal);
  EXPECT_TRUE(assess_peer(c, kStranger + 1, kStrangerGroup).refusal);
  EXPECT_FALSE(assess_peer(c, ::geteuid(), 0).refusal);  // the daemon's own uid always
}

TEST(RefuseAdminRequest, OnlyShutdownCheckpointAndBackupNeedTheAdminRole) {
  for (const auto type : {MsgType::kShutdown, MsgType::kCheckpoint, MsgType::kBackup}) {
    EXPECT_TRUE(pasyn::server::refuse_admin_request(type, false)) << pasyn::proto::to_string(type);
    EXPECT_FALSE(pasyn::server::refuse_admin_request(type, true));
  }
  for (const auto type : {MsgType::kPing, MsgType::kExecute, MsgType::kStats, MsgType::kBegin}) {
    EXPECT_FALSE(pasyn::server::refuse_admin_request(type, false)) << pasyn::proto::to_string(type);
  }
}

TEST(InvalidBackupName, AcceptsPlainFileNamesOnly) {
  using pasyn::server::invalid_backup_name;
  for (const char* ok : {"copy.sqlite", "2026-11-27", "a..b", "x~", "name with spaces"}) {
    EXPECT_FALSE(invalid_backup_name(ok)) << ok;
  }
  for (const std::string& bad :
       {std::string(""), std::string("."), std::string(".."), std::string("../x"),
        std::string("/abs"), std::string("a/b"), std::string("a/"), std::string(".hidden"),
        std::string("a\0b", 3), std::string(201, 'x')}) {
    EXPECT_TRUE(invalid_backup_name(bad)) << bad;
  }
}

}  // namespace
