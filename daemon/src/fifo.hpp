// Fifo: a first-in first-out list in one vector, for the writer's work list and the change
// feed's history, which take from the front and add at the back all day long. A std::deque
// allocates a node every few elements (every two requests: a Request is 224 bytes) and frees
// it again; this reuses its one buffer once it has grown to the list's usual length.
#pragma once

#include <cstddef>
#include <iterator>
#include <type_traits>
#include <utility>
#include <vector>

namespace pasyn::server {

/// The elements are items_[head_, end). pop_front() resets the element it leaves behind (a
/// shared reference is released at once), take_front() moves it out, and both advance head_; the
/// buffer is emptied whole once everything was taken, or compacted (the live elements moved to its
/// start) when an element is added while the dead ones are at least half of it and kCompactAt,
/// so that a list that never empties (a sliding window) stays within twice its length, and a
/// list taken to the end is never compacted (compacting it as it was taken moved each element
/// once more: ~80 instructions per request in the writer, by callgrind); once empty it keeps at
/// most kKeptCapacity elements room, so a burst does not pin its memory. Thread-safety: none (guard
/// it like a std::deque). Ownership: owns its elements.
template <typename T>
class Fifo {
 public:
  using iterator = typename std::vector<T>::iterator;
  using const_iterator = typename std::vector<T>::const_iterator;

  bool empty() const noexcept { return head_ == items_.size(); }
  std::size_t size() const noexcept { return items_.size() - head_; }
  iterator begin() noexcept { return items_.begin() + static_cast<std::ptrdiff_t>(head_); }
  iterator end() noexcept { return items_.end(); }
  const_iterator begin() const noexcept {
    return items_.begin() + static_cast<std::ptrdiff_t>(head_);
  }
  const_iterator end() const noexcept { return items_.end(); }
  T& front() noexcept { return items_[head_]; }
  const T& front() const noexcept { return items_[head_]; }
  T& back() noexcept { return items_.back(); }
  const T& back() const noexcept { return items_.back(); }

  void push_back(T&& value) {
    compact();
    items_.push_back(std::move(value));
  }
  /// Moves every element of `from` to the back, in order, and leaves `from` empty. Into an empty
  /// list the two buffers change places, so nothing is moved one by one (the writer takes each
  /// batch of requests from its queue this way).
  void append(std::vector<T>& from) {
    if (empty()) {
      items_.clear();
      head_ = 0;
      items_.swap(from);
    } else {
      compact();
      for (auto& value : from) items_.push_back(std::move(value));
    }
    from.clear();
  }
  iterator insert(iterator at, T&& value) { return items_.insert(at, std::move(value)); }
  template <typename It>
  iterator insert(iterator at, It first, It last) {
    return items_.insert(at, first, last);
  }

  /// Drops the first element, resetting it at once (a shared reference is released now).
  void pop_front() noexcept {
    items_[head_] = T{};
    advance();
  }
  /// Moves the first element out and drops it. What it leaves behind is moved-from (a Request
  /// then holds nothing) and is destroyed when the buffer is emptied or compacted: cheaper
  /// than pop_front() for a large element.
  T take_front() noexcept {
    T value = std::move(items_[head_]);
    advance();
    return value;
  }
  void clear() noexcept {
    items_.clear();
    head_ = 0;
    if (items_.capacity() > kKeptCapacity) std::vector<T>().swap(items_);  // after a burst
  }

 private:
  void advance() noexcept {
    if (++head_ == items_.size()) clear();
  }
  // Before an element is added: moves the live elements to the front once the dead ones are at
  // least half of the buffer (and kCompactAt).
  void compact() noexcept {
    if (head_ < kCompactAt || 2 * head_ < items_.size()) return;
    // The elements are movable without throwing (static_assert below): nothing can fail.
    std::move(items_.begin() + static_cast<std::ptrdiff_t>(head_), items_.end(), items_.begin());
    items_.erase(items_.end() - static_cast<std::ptrdiff_t>(head_), items_.end());
    head_ = 0;
  }

  static_assert(std::is_nothrow_move_assignable_v<T> && std::is_nothrow_move_constructible_v<T>);
  static constexpr std::size_t kCompactAt = 64;
  static constexpr std::size_t kKeptCapacity = 4096;  // elements kept once empty
  std::vector<T> items_;
  std::size_t head_ = 0;
};

}  // namespace pasyn::server
