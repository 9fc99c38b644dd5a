// ChangeFeed (pasyn/change_feed.hpp): a subscription on a connection of its own. next() reads
// that connection on the calling thread (no thread of its own), decodes CHANGE frames into
// Changes, and reconnects and resumes when the connection is lost.
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <deque>
#include <pasyn/client.hpp>
#include <pasyn/proto/codec.hpp>
#include <pasyn/proto/feed.hpp>
#include <pasyn/proto/unix_socket.hpp>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "client_impl.hpp"
#include "handshake.hpp"
#include "reply.hpp"

namespace pasyn {
namespace {

using Clock = std::chrono::steady_clock;

constexpr std::uint64_t kSubscribeId = 1;
constexpr std::chrono::milliseconds kMinBackoff{25};
constexpr std::chrono::milliseconds kMaxBackoff{2000};
constexpr std::chrono::milliseconds kMinReconnect{200};

ChangeKind kind_of(proto::ChangeOp op) {
  switch (op) {
    case proto::ChangeOp::kInsert:
      return ChangeKind::insert;
    case proto::ChangeOp::kUpdate:
      return ChangeKind::update;
    case proto::ChangeOp::kDelete:
      break;
  }
  return ChangeKind::remove;
}

}  // namespace

struct ChangeFeed::Impl {
  std::string path;
  ClientOptions options;
  std::vector<std::string> tables;
  std::optional<std::uint64_t> first_after;  // the caller's after_seq, for the first SUBSCRIBE

  int fd = -1;
  proto::FrameDecoder decoder{proto::kDefaultMaxFrame};
  bool closed = false;
  bool subscribed_once = false;  // (epoch, last_seq) name the point to resume after
  std::uint64_t epoch = 0;
  std::uint64_t last_seq = 0;  // the last commit received: where a reconnect resumes
  // While `ready` holds changes: the last commit whose changes next() has all returned (the
  // resume point last_seq() reports, so that one saved between two changes of a commit never
  // skips the rest of it). With `ready` empty, last_seq is that point.
  std::uint64_t handed_out = 0;

  void queue(Change c) {
    if (ready.empty()) handed_out = last_seq;
    ready.push_back(std::move(c));
  }

  std::uint64_t resume_point() const { return ready.empty() ? last_seq : handed_out; }
  std::deque<Change> ready;
  // The changes of a commit whose frames have not all come (kCommitPart): delivered with its
  // last frame, dropped if the connection is lost before it (the resume replays the commit).
  std::vector<Change> partial;
  std::chrono::milliseconds backoff{kMinBackoff};
  Clock::time_point next_attempt{};

  ~Impl() { drop(); }

  void drop() noexcept {
    if (fd >= 0) ::close(fd);
    fd = -1;
    partial.clear();  // an unfinished commit comes again whole after the resume
  }

  // Connects, subscribes and reads SUBSCRIBED by `deadline`: from the caller's point the first
  // time, then after the last commit delivered. Throws what connecting throws, TimeoutError, or
  // the daemon's error.
  void subscribe(Clock::time_point deadline) {
    int s = detail::connect_to_daemon(path, options, deadline);
    try {
      std::uint64_t caps = 0;
      detail::handshake(s, path, options, deadline, &caps);
      if (!(caps & proto::kCapChangeFeed)) {
        throw ProtocolError("pasyn-writerd at " + path + " has no change feed");
      }
      std::optional<proto::FeedPoint> point;
      if (subscribed_once) {
        point = proto::FeedPoint{epoch, last_seq};
      } else if (first_after) {
        point = proto::FeedPoint{0, *first_after};
      }
      std::vector<std::uint8_t> frame;
      proto::encode_subscribe(frame, kSubscribeId, tables, point);
      send_all(s, frame, deadline);
      // A CHANGE frame is at most about 1 MiB (PROTOCOL.md §8): the default maximum holds it.
      decoder = proto::FrameDecoder(proto::kDefaultMaxFrame);
      fd = s;
      s = -1;
      proto::FrameView f;
      if (!next_frame(f, deadline)) {
        throw TimeoutError("pasyn-writerd at " + path + " did not answer SUBSCRIBE in time");
      }
      detail::expect(f, proto::MsgType::kSubscribed);
      proto::Subscribed m;
      std::string why;
      if (!proto::decode_subscribed(f.payload, m, why)) detail::throw_protocol(why);
      if (subscribed_once && m.epoch != epoch) {
        queue(Change{m.last_seq, {}, ChangeKind::reset, 0});
      }
      epoch = m.epoch;
      if (!m.resumed) {
        last_seq = m.last_seq;
      } else if (!subscribed_once) {
        last_seq = *first_after;  // the caller's point: the commits after it follow
      }
      subscribed_once = true;
    } catch (...) {
      if (s >= 0) ::close(s);
      drop();
      throw;
    }
  }

  void send_all(int s, const std::vector<std::uint8_t>& frame, Clock::time_point deadline) {
    std::size_t sent = 0;
    while ((sent += proto::send_nonblocking(s, frame.data() + sent, frame.size() - sent)) <
           frame.size()) {
      if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) {
        throw ConnectionLostError("cannot subscribe at pasyn-writerd " + path + ": " +
                                  std::strerror(errno));
      }
      if (!wait_readable(s, POLLOUT, deadline)) {
        throw TimeoutError("pasyn-writerd at " + path + " took no SUBSCRIBE in time");
      }
    }
  }

  static bool wait_readable(int s, short events, Clock::time_point deadline) {
    for (;;) {
      const auto left = std::chrono::ceil<std::chrono::milliseconds>(deadline - Clock::now());
      pollfd p{s, events, 0};
      const int n = ::poll(&p, 1, static_cast<int>(std::max<std::int64_t>(left.count(), 0)));
      if (n > 0) return true;
      if (n == 0) return false;
      if (errno != EINTR) return true;  // let the read report it
    }
  }

  // The next frame of the connection into `f`, reading until `deadline`; false at the deadline.
  // Throws ConnectionLostError when the connection ends, ProtocolError for a malformed stream.
  bool next_frame(proto::FrameView& f, Clock::time_point deadline) {
    for (;;) {
      const auto status = decoder.next(f);
      if (status == proto::FrameDecoder::Status::kFrame) return true;
      if (status == proto::FrameDecoder::Status::kError) detail::throw_protocol(decoder.error());
      auto buf = decoder.prepare(detail::kLargeRead);
      const ssize_t n = ::recv(fd, buf.data(), buf.size(), MSG_DONTWAIT);
      if (n > 0) {
        decoder.commit(static_cast<std::size_t>(n));
        continue;
      }
      if (n == 0) throw ConnectionLostError("pasyn-writerd at " + path + " closed the feed");
      if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) {
        throw ConnectionLostError("the feed's connection to pasyn-writerd at " + path +
                                  " failed: " + std::strerror(errno));
      }
      if (!wait_readable(fd, POLLIN, deadline)) return false;
    }
  }

  void take(const proto::FrameView& f) {
    const auto type = static_cast<proto::MsgType>(f.type);
    if (type == proto::MsgType::kPong) return;
    if (type == proto::MsgType::kError) {  // the daemon ends the connection (shed, shutdown...)
      proto::ErrorReply e;
      std::string why;
      if (!proto::decode_error(f.payload, e, why)) detail::throw_protocol(why);
      throw ConnectionLostError("pasyn-writerd at " + path + " ended the feed: " + e.message);
    }
    if (type != proto::MsgType::kChange) detail::expect(f, proto::MsgType::kChange);  // throws
    proto::FeedFrame m;
    std::string why;
    if (!proto::decode_change(f.payload, m, why)) detail::throw_protocol(why);
    if (!partial.empty() &&
        (m.event == proto::FeedEvent::kGap || partial.front().commit_seq != m.seq)) {
      detail::throw_protocol("a commit's frames were interrupted");
    }
    if (m.event == proto::FeedEvent::kGap) {
      queue(Change{m.seq, {}, ChangeKind::gap, 0});
      return;
    }
    for (const auto& c : m.changes) {
      partial.push_back(Change{m.seq, std::string(c.table), kind_of(c.op), c.rowid});
    }
    if (m.event == proto::FeedEvent::kCommitPart) return;
    for (auto& c : partial) queue(std::move(c));
    partial.clear();
    last_seq = m.seq;
  }

  std::optional<Change> next(std::chrono::milliseconds timeout) {
    if (closed) throw ConnectionClosedError("the change feed is closed");
    const auto deadline = detail::deadline_after(timeout);
    for (;;) {
      if (!ready.empty()) {
        Change c = std::move(ready.front());
        ready.pop_front();
        if (!ready.empty()) {
          if (c.kind == ChangeKind::reset) {
            handed_out = c.commit_seq;  // the new run's point, before its commits
          } else if (c.kind == ChangeKind::gap) {
            handed_out = ready.front().commit_seq - 1;  // the commits after the gap follow
          } else if (ready.front().commit_seq != c.commit_seq) {
            handed_out = c.commit_seq;  // the last change of its commit
          }
        }
        return c;
      }
      if (fd < 0) {
        const auto now = Clock::now();
        if (now < next_attempt) {
          if (deadline <= now) return std::nullopt;
          std::this_thread::sleep_for(std::min(next_attempt, deadline) - now);
          continue;
        }
        // A reconnect gets the connect timeout, but no more than what is left of this call
        // (at least kMinReconnect, or a short next() could never reconnect).
        const auto connect_by = std::min(detail::deadline_after(options.connect_timeout),
                                         std::max(deadline, now + kMinReconnect));
        try {
          subscribe(connect_by);
          backoff = kMinBackoff;
        } catch (const ConnectionLostError&) {  // the daemon is away: try again later
          next_attempt = Clock::now() + backoff;
          backoff = std::min(backoff * 2, kMaxBackoff);
        } catch (const TimeoutError&) {
          next_attempt = Clock::now() + backoff;
          backoff = std::min(backoff * 2, kMaxBackoff);
        }
        continue;
      }
      try {
        proto::FrameView f;
        if (!next_frame(f, deadline)) return std::nullopt;
        take(f);
      } catch (const ConnectionLostError&) {  // start over, resuming after the last commit
        drop();
        next_attempt = Clock::now();
      } catch (...) {  // a stream it cannot read: not worth retrying blindly
        drop();
        throw;
      }
    }
  }
};

ChangeFeed::ChangeFeed(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
ChangeFeed::ChangeFeed(ChangeFeed&&) noexcept = default;
ChangeFeed& ChangeFeed::operator=(ChangeFeed&&) noexcept = default;
ChangeFeed::~ChangeFeed() = default;

std::optional<Change> ChangeFeed::next(std::chrono::milliseconds timeout) {
  if (!impl_) throw ConnectionClosedError("the change feed is closed");
  return impl_->next(timeout);
}

std::uint64_t ChangeFeed::last_seq() const noexcept { return impl_ ? impl_->resume_point() : 0; }
std::uint64_t ChangeFeed::epoch() const noexcept { return impl_ ? impl_->epoch : 0; }

void ChangeFeed::close() noexcept {
  if (!impl_) return;
  impl_->drop();
  impl_->closed = true;
  impl_->ready.clear();
}

ChangeFeed MultiplexedClient::subscribe(std::vector<std::string> tables,
                                        std::optional<std::uint64_t> after_seq) {
  impl().check_not_closed();
  auto feed = std::make_unique<ChangeFeed::Impl>();
  feed->path = socket_path();
  feed->options = impl().options();
  feed->tables = std::move(tables);
  feed->first_after = after_seq;
  feed->subscribe(detail::deadline_after(feed->options.connect_timeout));
  return ChangeFeed(std::move(feed));
}

ChangeFeed MultiplexedClient::subscribe(std::vector<std::string> tables, std::uint64_t epoch,
                                        std::uint64_t after_seq) {
  if (epoch == 0) return subscribe(std::move(tables), std::optional<std::uint64_t>(after_seq));
  impl().check_not_closed();
  auto feed = std::make_unique<ChangeFeed::Impl>();
  feed->path = socket_path();
  feed->options = impl().options();
  feed->tables = std::move(tables);
  // As a feed that delivered up to `after_seq` of `epoch` and resumes: another epoch is a reset.
  feed->subscribed_once = true;
  feed->epoch = epoch;
  feed->last_seq = after_seq;
  feed->subscribe(detail::deadline_after(feed->options.connect_timeout));
  return ChangeFeed(std::move(feed));
}

}  // namespace pasyn
