// The change feed's reconnect in the middle of a commit that spans several CHANGE frames
// (PROTOCOL.md §8, `commit part`): the feed's connection goes through a proxy that cuts it
// after the first frame of the commit and part of the second; the client must deliver the
// commit whole, exactly once, after resuming.
#include <poll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <atomic>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

#include "daemon_fixture.hpp"

namespace {

using namespace pasyn::itest;
using pasyn::Change;
using pasyn::ChangeKind;

/// Forwards the connections made to `path` to the daemon's socket `target`, and cuts (closes
/// both ends of) the first one once it has carried `cut_after` bytes from the daemon.
///
/// Thread-safety: cut() from any thread; the rest from the owning thread. Forwarding runs on a
/// thread of its own, stopped by the destructor.
class CuttingProxy {
 public:
  CuttingProxy(std::string path, std::string target, std::size_t cut_after)
      : path_(std::move(path)), target_(std::move(target)), cut_after_(cut_after) {
    listen_fd_ = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    const auto addr = pasyn::proto::unix_address(path_);
    if (!addr || ::bind(listen_fd_, reinterpret_cast<const sockaddr*>(&*addr), sizeof *addr) != 0 ||
        ::listen(listen_fd_, 8) != 0) {
      ADD_FAILURE() << "cannot listen at " << path_ << ": "
                    << (addr ? std::strerror(errno) : "not a Unix socket path");
    }
    thread_ = std::thread([this] { run(); });
  }
  ~CuttingProxy() {
    stop_ = true;
    thread_.join();
    for (auto& p : pairs_) close_pair(p);
    ::close(listen_fd_);
  }
  CuttingProxy(const CuttingProxy&) = delete;
  CuttingProxy& operator=(const CuttingProxy&) = delete;

  bool cut() const { return cut_.load(); }

 private:
  struct Pair {
    int client = -1;
    int daemon = -1;
    std::size_t down = 0;  // bytes from the daemon
  };

  static void close_pair(Pair& p) {
    if (p.client >= 0) ::close(p.client);
    if (p.daemon >= 0) ::close(p.daemon);
    p.client = p.daemon = -1;
  }

  // Copies what `from` has to `to` (blocking writes: the test reads the feed); false at EOF or
  // on an error.
  static bool forward(int from, int to, std::size_t& count) {
    char buf[64 * 1024];
    const ssize_t n = ::recv(from, buf, sizeof buf, 0);
    if (n <= 0) return false;
    for (ssize_t sent = 0; sent < n;) {
      const ssize_t m = ::send(to, buf + sent, static_cast<std::size_t>(n - sent), MSG_NOSIGNAL);
      if (m <= 0) return false;
      sent += m;
    }
    count += static_cast<std::size_t>(n);
    return true;
  }

  void run() {
    while (!stop_) {
      std::vector<pollfd> fds{{listen_fd_, POLLIN, 0}};
      for (const auto& p : pairs_) {
        fds.push_back({p.client, POLLIN, 0});
        fds.push_back({p.daemon, POLLIN, 0});
      }
      if (::poll(fds.data(), fds.size(), 20) <= 0) continue;
      if (fds[0].revents & POLLIN) {
        Pair p;
        p.client = ::accept4(listen_fd_, nullptr, nullptr, SOCK_CLOEXEC);
        p.daemon = connect_unix(target_);
        if (p.client >= 0 && p.daemon >= 0) {
          pairs_.push_back(p);
        } else {
          close_pair(p);
        }
        continue;  // the descriptors polled no longer match pairs_
      }
      for (std::size_t i = 0; i < pairs_.size(); ++i) {
        auto& p = pairs_[i];
        std::size_t up = 0;
        bool ok = true;
        if (fds[1 + 2 * i].revents != 0) ok = forward(p.client, p.daemon, up);
        if (ok && fds[2 + 2 * i].revents != 0) ok = forward(p.daemon, p.client, p.down);
        if (ok && !cut_ && p.down >= cut_after_) {
          cut_ = true;
          ok = false;
        }
        if (!ok) close_pair(p);
      }
      std::erase_if(pairs_, [](const Pair& p) { return p.client < 0; });
    }
  }

  std::string path_;
  std::string target_;
  std::size_t cut_after_;
  int listen_fd_ = -1;
  std::vector<Pair> pairs_;  // the proxy thread's
  std::atomic<bool> stop_{false};
  std::atomic<bool> cut_{false};
  std::thread thread_;
};

class ChangeFeedReconnectTest : public DaemonTest {};

TEST_F(ChangeFeedReconnectTest, ACommitCutMidwayIsDeliveredWholeOnceAfterTheResume) {
  ASSERT_NO_FATAL_FAILURE(start_daemon());
  auto writer = connect_client();
  writer.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, v)");
  // The commit below is ~2 MiB of changes: frames of at most 1 MiB. The proxy cuts the feed's
  // connection after 1.5 MiB: the first frame (a `commit part`) has come, the second not whole.
  CuttingProxy proxy(dir_.file("proxy.sock"), sock_, 3u << 19);
  pasyn::MultiplexedClient via_proxy(dir_.file("proxy.sock"), bounded_options());
  auto feed = via_proxy.subscribe();
  const auto start = feed.last_seq();
  constexpr int kRows = 150000;
  std::vector<pasyn::Params> rows;
  for (int i = 0; i < kRows; ++i) rows.push_back({i});
  writer.execute_many("INSERT INTO t (v) VALUES (?)", rows);

  std::vector<Change> got;
  for (const auto until = Clock::now() + 20s; got.size() < kRows && Clock::now() < until;) {
    if (auto c = feed.next(100ms)) got.push_back(std::move(*c));
  }
  EXPECT_TRUE(proxy.cut()) << "the connection was not cut: the test tested nothing";
  ASSERT_EQ(got.size(), static_cast<std::size_t>(kRows));
  for (std::size_t i = 0; i < got.size(); ++i) {
    ASSERT_EQ(got[i].kind, ChangeKind::insert) << i;
    ASSERT_EQ(got[i].commit_seq, start + 1) << i;
    ASSERT_EQ(got[i].rowid, static_cast<std::int64_t>(i + 1)) << "out of order or twice: " << i;
  }
  EXPECT_EQ(feed.last_seq(), start + 1);
  const auto extra = feed.next(300ms);
  EXPECT_FALSE(extra) << "a change more: kind " << static_cast<int>(extra->kind) << ", row "
                      << extra->rowid;
}

}  // namespace
