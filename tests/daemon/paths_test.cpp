// Unit tests of the daemon's lock file (paths.hpp).
#include <gtest/gtest.h>
#include <stdlib.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>

#include "paths.hpp"

namespace {

namespace fs = std::filesystem;

class LockFileTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/pasyn-paths-XXXXXX";
    ASSERT_NE(::mkdtemp(tmpl), nullptr);
    dir_ = tmpl;
  }
  void TearDown() override { fs::remove_all(dir_); }
  static std::string contents(const fs::path& p) {
    std::ifstream in(p);
    std::stringstream s;
    s << in.rdbuf();
    return s.str();
  }
  fs::path dir_;
};

TEST_F(LockFileTest, TakesTheLockAndRecordsThePid) {
  const std::string db = (dir_ / "db.sqlite").string();
  pasyn::server::LockFile lock(db, false);
  EXPECT_EQ(lock.path(), db + "-pasyn.lock");
  EXPECT_EQ(contents(lock.path()), std::to_string(::getpid()) + "\n");
}

// pasyn-writerd also locks the database file: a second path to it that is neither a symlink nor
// a hard link (the file renamed while served) finds that lock.
TEST_F(LockFileTest, TheDatabaseFileIsLockedUnderAnyOfItsNames) {
  const std::string db = (dir_ / "db.sqlite").string(), moved = (dir_ / "moved.sqlite").string();
  pasyn::server::LockFile lock(db, true);
  EXPECT_TRUE(fs::exists(db)) << "made, empty, as SQLite would";
  fs::rename(db, moved);
  try {
    pasyn::server::LockFile second(moved, true);
    ADD_FAILURE() << "a second lock on the renamed database";
  } catch (const pasyn::server::StartError& e) {
    EXPECT_NE(std::string(e.what()).find("another path to the same file"), std::string::npos)
        << e.what();
  }
  pasyn::server::LockFile in_process(moved, false);  // a server in an application's process
}

/// A symlink planted where the lock file goes must not make the daemon truncate its target
/// (review: "minor: lock file").
TEST_F(LockFileTest, RefusesASymlinkAtTheLockPathAndLeavesItsTargetAlone) {
  const fs::path victim = dir_ / "victim";
  std::ofstream(victim) << "precious";
  const std::string db = (dir_ / "db.sqlite").string();
  fs::create_symlink(victim, db + "-pasyn.lock");
  EXPECT_THROW((pasyn::server::LockFile{db, false}), pasyn::server::StartError);
  EXPECT_EQ(contents(victim), "precious");
}

}  // namespace
