// The Unix-socket helpers every part shares (proto/include/pasyn/proto/unix_socket.hpp): an
// address is never truncated, and a connection reports why it failed.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <pasyn/proto/unix_socket.hpp>
#include <string>

namespace {

using pasyn::proto::connect_unix;
using pasyn::proto::unix_address;

constexpr std::size_t kLongest = sizeof(sockaddr_un::sun_path) - 1;  // 107 on Linux

TEST(UnixAddress, HoldsThePathWithItsTerminator) {
  const auto addr = unix_address("/run/pasyn/x.sock");
  ASSERT_TRUE(addr);
  EXPECT_EQ(addr->sun_family, AF_UNIX);
  EXPECT_STREQ(addr->sun_path, "/run/pasyn/x.sock");
}

TEST(UnixAddress, TakesTheLongestPathThatFitsAndRefusesOneByteMore) {
  const std::string fits(kLongest, 'a');
  const auto addr = unix_address(fits);
  ASSERT_TRUE(addr);
  EXPECT_EQ(std::string(addr->sun_path), fits);
  // A truncated path would name another file: refused, never shortened.
  EXPECT_FALSE(unix_address(fits + "b"));
}

TEST(UnixAddress, RefusesAnEmptyPathAndOneHoldingANul) {
  EXPECT_FALSE(unix_address(""));
  EXPECT_FALSE(unix_address(std::string("/tmp/a\0b", 8)));
}

class ConnectUnix : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/pasyn-unix-socket-test-XXXXXX";
    ASSERT_NE(::mkdtemp(tmpl), nullptr);
    dir_ = tmpl;
  }
  void TearDown() override {
    if (dir_.empty()) return;  // mkdtemp failed: nothing was made
    ::unlink(path().c_str());
    ::rmdir(dir_.c_str());
  }
  // A stream socket bound at path() (its file made), or -1 with a test failure.
  int bound_socket() const {
    const int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    const auto addr = unix_address(path());
    if (fd < 0 || !addr ||
        ::bind(fd, reinterpret_cast<const sockaddr*>(&*addr), sizeof *addr) != 0) {
      ADD_FAILURE() << "cannot bind at " << path() << ": " << std::strerror(errno);
      if (fd >= 0) ::close(fd);
      return -1;
    }
    return fd;
  }
  std::string path() const { return dir_ + "/s"; }
  std::string dir_;
};

TEST_F(ConnectUnix, ConnectsToAListeningSocketCloseOnExec) {
  const int listener = bound_socket();
  ASSERT_GE(listener, 0);
  ASSERT_EQ(::listen(listener, 1), 0);
  const int fd = connect_unix(path());
  ASSERT_GE(fd, 0) << std::strerror(errno);
  EXPECT_NE(::fcntl(fd, F_GETFD) & FD_CLOEXEC, 0);
  ::close(fd);
  ::close(listener);
}

TEST_F(ConnectUnix, ReportsWhyItFailed) {
  errno = 0;
  EXPECT_EQ(connect_unix(dir_ + "/nobody-here"), -1);
  EXPECT_EQ(errno, ENOENT);
  errno = 0;
  EXPECT_EQ(connect_unix(std::string(kLongest + 1, 'a')), -1);
  EXPECT_EQ(errno, ENAMETOOLONG);
  for (const std::string& bad : {std::string(), std::string("/tmp/a\0b", 8)}) {
    errno = 0;
    EXPECT_EQ(connect_unix(bad), -1);
    EXPECT_EQ(errno, EINVAL);
  }
}

// A socket file nobody listens on (a daemon that died): ECONNREFUSED, which is how the daemon's
// start tells a stale socket it may replace from one in use (daemon/src/paths.cpp).
TEST_F(ConnectUnix, ASocketNobodyListensOnRefuses) {
  const int bound = bound_socket();
  ASSERT_GE(bound, 0);
  ::close(bound);  // the file stays, with nobody behind it
  errno = 0;
  EXPECT_EQ(connect_unix(path()), -1);
  EXPECT_EQ(errno, ECONNREFUSED);
}

}  // namespace
