// Cumulative histograms of the writer's figures (batch size, commit latency, queue wait), reported
// by STATS as one figure per bucket (PROTOCOL.md "Reports") and printed by `pasyn stats
// --prometheus` as Prometheus histograms.
#pragma once

#include <algorithm>
#include <array>
#include <cstddef>
#include <cstdint>
#include <pasyn/proto/codec.hpp>
#include <span>
#include <string>

namespace pasyn::server {

/// Counts of observations by upper bound, plus their sum and number. A value type: the writer
/// updates it under its stats mutex and hands out copies. Thread-safety: none of its own.
class Histogram {
 public:
  /// Upper bounds (inclusive), ascending; a last, implicit bucket counts everything above.
  explicit Histogram(std::span<const std::uint64_t> bounds) : bounds_(bounds) {}

  void observe(std::uint64_t value) {
    const auto at = std::lower_bound(bounds_.begin(), bounds_.end(), value) - bounds_.begin();
    ++counts_[static_cast<std::size_t>(at)];
    sum_ += value;
    ++count_;
  }

  /// Appends `NAME_le_BOUND` for every bound and `NAME_le_inf` (cumulative counts, as Prometheus
  /// buckets are), then `NAME_sum` and `NAME_count`, all integers.
  void append_figures(proto::Report& report, const std::string& name) const {
    std::uint64_t cumulative = 0;
    for (std::size_t i = 0; i <= bounds_.size(); ++i) {
      cumulative += counts_[i];
      const std::string bound = i < bounds_.size() ? std::to_string(bounds_[i]) : "inf";
      report.emplace_back(name + "_le_" + bound, static_cast<std::int64_t>(cumulative));
    }
    report.emplace_back(name + "_sum", static_cast<std::int64_t>(sum_));
    report.emplace_back(name + "_count", static_cast<std::int64_t>(count_));
  }

 private:
  static constexpr std::size_t kMaxBuckets = 24;
  std::span<const std::uint64_t> bounds_;  // static storage (the constants below)
  std::array<std::uint64_t, kMaxBuckets + 1> counts_{};
  std::uint64_t sum_ = 0;
  std::uint64_t count_ = 0;
};

/// Requests per committed batch.
inline constexpr std::uint64_t kBatchSizeBounds[] = {1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024};
/// Microseconds: COMMIT durations and queue waits (from 100 µs to 10 s).
inline constexpr std::uint64_t kMicrosecondBounds[] = {
    100,   250,    500,    1000,   2500,    5000,    10000,   25000,
    50000, 100000, 250000, 500000, 1000000, 2500000, 5000000, 10000000};

}  // namespace pasyn::server
