// The bytes a MultiplexedClient has encoded and not yet sent, in stream order.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <vector>

namespace pasyn::detail {

/// Requests are appended at the end (encoders write to for_append()); sends take from the
/// front. A partial send advances an offset instead of moving the rest of the bytes to the
/// front: a large frame, which a Unix socket takes ~200 KiB per send, was otherwise moved once
/// per send, so sending it was quadratic (a 4.8 MiB execute_many moved ~55 MiB). The sent
/// prefix is dropped when everything is sent, or before a request is appended once that prefix
/// is at least half of the buffer (then at most as many bytes move as were sent: linear
/// overall), as server::Fifo compacts only before it adds: a large frame sent while nothing is
/// appended moves no byte. A buffer grown past kKeptCapacity by a large request is freed once
/// it is all sent, so one large call does not pin its size for the client's lifetime.
///
/// Not thread-safe: MultiplexedClient::Impl guards it with its mutex. Owns its bytes.
class Outbox {
 public:
  static constexpr std::size_t kKeptCapacity = 1u << 20;

  /// Where a request is encoded: only appended to. A caller may cut back what it appended
  /// itself (resize to the size it found) before anything else uses the outbox, never further:
  /// the bytes before that size may be partly sent.
  std::vector<std::uint8_t>& for_append() {
    if (sent_ != 0 && sent_ * 2 >= bytes_.size()) {
      bytes_.erase(bytes_.begin(), bytes_.begin() + static_cast<std::ptrdiff_t>(sent_));
      sent_ = 0;
    }
    return bytes_;
  }
  /// Every byte, the sent prefix included (for tests and checks).
  const std::vector<std::uint8_t>& bytes() const noexcept { return bytes_; }
  /// The bytes still to send.
  std::span<const std::uint8_t> unsent() const noexcept {
    return std::span<const std::uint8_t>(bytes_).subspan(sent_);
  }
  bool empty() const noexcept { return sent_ == bytes_.size(); }
  /// The first `n` unsent bytes were sent. REQUIRES: n <= unsent().size().
  void consume(std::size_t n) noexcept {
    sent_ += n;
    if (sent_ == bytes_.size()) clear();
  }
  /// Drops everything, sent or not.
  void clear() noexcept {
    sent_ = 0;
    if (bytes_.capacity() > kKeptCapacity) {
      std::vector<std::uint8_t>().swap(bytes_);
    } else {
      bytes_.clear();
    }
  }

 private:
  std::vector<std::uint8_t> bytes_;
  std::size_t sent_ = 0;  // bytes_[0, sent_) are sent
};

}  // namespace pasyn::detail
