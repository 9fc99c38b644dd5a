// pasyn-bench statistics: the latency histogram the workers fill and the orchestrator merges,
// medians over repetitions, and the number formats of the report.
#pragma once

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstdint>
#include <sstream>
#include <string>
#include <string_view>
#include <vector>

#include "workload.hpp"

namespace pasyn_bench {

std::int64_t nanos(Clock::duration d);

// The median of the non-NaN values; NaN when there are none.
double median(std::vector<double> v);

// The largest non-NaN value; NaN when there are none.
double max_of(const std::vector<double>& v);

// `v` printed with a printf format; "-" for NaN.
std::string format(const char* fmt, double v);

// A setting or target as written: 20, 1.5, 0.9.
std::string plain(double v);

// A figure with about four significant digits, without exponent notation.
std::string figure(double v);

// Latency histogram in nanoseconds: exact below 64 ns, then 64 sub-buckets per power of two
// (under 1.6% error). Mergeable across threads and processes (serialised as "index:count").
class Histogram {
 public:
  void add(std::int64_t ns) {
    ++counts_[index(ns < 0 ? 0 : static_cast<std::uint64_t>(ns))];
    ++total_;
  }
  void merge(const Histogram& other) {
    for (std::size_t i = 0; i < kBuckets; ++i) counts_[i] += other.counts_[i];
    total_ += other.total_;
  }
  std::uint64_t total() const { return total_; }
  // The value at quantile q (0..1), in microseconds; NaN when empty.
  double quantile_us(double q) const {
    if (total_ == 0) return kNaN;
    const auto rank = std::max<std::uint64_t>(
        1, static_cast<std::uint64_t>(std::ceil(q * static_cast<double>(total_))));
    std::uint64_t seen = 0;
    for (std::size_t i = 0; i < kBuckets; ++i) {
      seen += counts_[i];
      if (seen >= rank) return midpoint(i) / 1000.0;
    }
    return midpoint(kBuckets - 1) / 1000.0;
  }
  std::string serialize() const {
    std::string out;
    for (std::size_t i = 0; i < kBuckets; ++i) {
      if (counts_[i] == 0) continue;
      if (!out.empty()) out += ' ';
      out += std::to_string(i) + ':' + std::to_string(counts_[i]);
    }
    return out;
  }
  void parse(std::string_view text) {
    std::istringstream in{std::string(text)};
    std::string item;
    while (in >> item) {
      const auto colon = item.find(':');
      if (colon == std::string::npos) continue;
      const auto i = std::stoull(item.substr(0, colon));
      const auto c = std::stoull(item.substr(colon + 1));
      if (i < kBuckets) {
        counts_[i] += c;
        total_ += c;
      }
    }
  }

 private:
  static constexpr std::size_t kSub = 64;
  static constexpr std::size_t kBuckets = (64 - 5) * kSub;
  static std::size_t index(std::uint64_t ns) {
    if (ns < kSub) return static_cast<std::size_t>(ns);
    const int e = std::bit_width(ns) - 1;  // ns in [2^e, 2^(e+1)), e >= 6
    return static_cast<std::size_t>(e - 5) * kSub + ((ns >> (e - 6)) & (kSub - 1));
  }
  static double midpoint(std::size_t i) {
    if (i < kSub) return static_cast<double>(i);
    const int e = static_cast<int>(i / kSub) + 5;
    const double low = std::ldexp(static_cast<double>(kSub + i % kSub), e - 6);
    return low + std::ldexp(0.5, e - 6);
  }
  std::vector<std::uint64_t> counts_ = std::vector<std::uint64_t>(kBuckets, 0);
  std::uint64_t total_ = 0;
};

}  // namespace pasyn_bench
