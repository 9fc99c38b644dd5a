// pasyn-bench statistics (see stats.hpp).
#include "stats.hpp"

#include <algorithm>
#include <cstdio>

namespace pasyn_bench {

std::int64_t nanos(Clock::duration d) {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(d).count();
}

double median(std::vector<double> v) {
  std::erase_if(v, [](double x) { return std::isnan(x); });
  if (v.empty()) return kNaN;
  std::sort(v.begin(), v.end());
  const std::size_t n = v.size();
  return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

double max_of(const std::vector<double>& v) {
  double m = kNaN;
  for (double x : v) {
    if (!std::isnan(x) && (std::isnan(m) || x > m)) m = x;
  }
  return m;
}

std::string format(const char* fmt, double v) {
  if (std::isnan(v)) return "-";
  char buf[64];
  std::snprintf(buf, sizeof buf, fmt, v);
  return buf;
}

std::string plain(double v) { return format("%g", v); }

std::string figure(double v) {
  if (std::isnan(v)) return "-";
  const double a = std::fabs(v);
  if (a >= 1000) return format("%.0f", v);
  if (a >= 100) return format("%.1f", v);
  if (a >= 10) return format("%.2f", v);
  return format("%.3f", v);
}

}  // namespace pasyn_bench
