// pasyn-test-soak-client: the raw protocol peer of its "bad frame" operation, and the malformed
// frames it sends (soak_client.hpp).
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <array>
#include <cerrno>
#include <chrono>
#include <cstdint>
#include <cstring>
#include <pasyn/proto/codec.hpp>
#include <pasyn/proto/unix_socket.hpp>
#include <random>
#include <string>
#include <vector>

#include "soak_client.hpp"

namespace pasyn::soak {
namespace {

void append_u32(std::vector<std::uint8_t>& out, std::uint32_t v) {
  for (int i = 0; i < 4; ++i) out.push_back(static_cast<std::uint8_t>(v >> (8 * i)));
}

void append_random(std::vector<std::uint8_t>& out, std::size_t n, std::mt19937_64& rng) {
  for (std::size_t i = 0; i < n; ++i) out.push_back(static_cast<std::uint8_t>(rng()));
}

constexpr std::array<std::uint8_t, 12> kUnknownTypes{0x00, 0x0F, 0x10, 0x1F, 0x28, 0x42,
                                                     0x4C, 0x63, 0x7F, 0x81, 0x8F, 0xFF};

}  // namespace

RawSocket::RawSocket(const std::string& path) : fd_(proto::connect_unix(path)) {}

RawSocket::~RawSocket() {
  if (fd_ >= 0) ::close(fd_);
}

bool RawSocket::send(const std::vector<std::uint8_t>& bytes) {
  std::size_t sent = 0;
  while (sent < bytes.size()) {
    const ssize_t n = ::send(fd_, bytes.data() + sent, bytes.size() - sent, MSG_NOSIGNAL);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return false;
    sent += static_cast<std::size_t>(n);
  }
  return true;
}

bool RawSocket::read(std::vector<Frame>& frames, std::size_t count, Clock::time_point deadline) {
  while (frames.size() < count && !eof_) {
    const auto left =
        std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now()).count();
    if (left <= 0) return true;
    pollfd p{fd_, POLLIN, 0};
    const int ready = ::poll(&p, 1, static_cast<int>(left));
    if (ready < 0 && errno == EINTR) continue;
    if (ready <= 0) return ready == 0;
    auto space = decoder_.prepare(4096);
    const ssize_t n = ::recv(fd_, space.data(), space.size(), 0);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {  // EOF, or ECONNRESET when the daemon closed with our bytes unread
      eof_ = true;
      break;
    }
    decoder_.commit(static_cast<std::size_t>(n));
    proto::FrameView view;
    for (;;) {
      const auto status = decoder_.next(view);
      if (status == proto::FrameDecoder::Status::kNeedMore) break;
      if (status == proto::FrameDecoder::Status::kError) return false;
      frames.push_back({view.type, view.request_id, {view.payload.begin(), view.payload.end()}});
    }
  }
  return true;
}

std::vector<std::uint8_t> malformed_frame(int kind, std::uint32_t max_frame, std::mt19937_64& rng) {
  std::vector<std::uint8_t> out;
  const std::uint64_t id = 1 + rng() % 1000000;
  switch (kind) {
    case 0:
      append_u32(out, static_cast<std::uint32_t>(rng() % proto::kMinLength));
      append_random(out, rng() % 16, rng);
      break;
    case 1: {  // only the length field: the daemon must refuse it before any body
      const std::uint64_t over = std::uint64_t{max_frame} - proto::kLengthFieldSize + 1;
      append_u32(out, static_cast<std::uint32_t>(over + rng() % (0x100000000ull - over)));
      break;
    }
    case 2: {
      proto::FrameWriter w(out, static_cast<proto::MsgType>(kUnknownTypes[rng() % 12]), id);
      for (std::size_t i = rng() % 64; i > 0; --i) w.u8(static_cast<std::uint8_t>(rng()));
      w.finish();
      break;
    }
    case 3: {
      proto::FrameWriter w(out, proto::MsgType::kExecute, id);
      const std::uint32_t follows = static_cast<std::uint32_t>(rng() % 32);
      w.u32(follows + 1 + static_cast<std::uint32_t>(rng() % 1000));
      for (std::uint32_t i = 0; i < follows; ++i) w.u8('x');
      w.finish();
      break;
    }
    case 4: {
      proto::FrameWriter w(out, proto::MsgType::kExecute, id);
      w.string(kInsert);
      w.u32(1);
      w.u8(static_cast<std::uint8_t>(5 + rng() % 251));  // tags 0-4 exist
      w.i64(0);
      w.finish();
      break;
    }
    case 5:
      proto::encode_hello(out, proto::Hello{});
      break;
    case 6: {
      proto::FrameWriter w(out, proto::MsgType::kPing, id);
      for (std::size_t i = 1 + rng() % 64; i > 0; --i) w.u8(static_cast<std::uint8_t>(rng()));
      w.finish();
      break;
    }
    default: {
      proto::FrameWriter w(
          out,
          static_cast<proto::MsgType>(static_cast<std::uint8_t>(proto::MsgType::kExecute) |
                                      proto::kIdempotent),
          id);
      w.string("");  // a key is 1 to 256 bytes
      w.string(kInsert);
      w.params({});
      w.finish();
      break;
    }
  }
  return out;
}

}  // namespace pasyn::soak
