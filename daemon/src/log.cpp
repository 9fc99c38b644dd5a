// Creates the shared "pasyn" logger on first use.
#include "log.hpp"

#include <spdlog/sinks/stdout_sinks.h>

namespace pasyn::server {

spdlog::logger& log() {
  static const std::shared_ptr<spdlog::logger> logger = [] {
    if (auto existing = spdlog::get("pasyn")) return existing;
    auto l = spdlog::stderr_logger_mt("pasyn");
    l->set_level(spdlog::level::warn);
    l->set_pattern("%Y-%m-%dT%H:%M:%S.%e %^%l%$ %v");
    return l;
  }();
  return *logger;
}

}  // namespace pasyn::server
