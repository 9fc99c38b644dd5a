// The daemon's logger: one spdlog logger named "pasyn", shared by the daemon and in-process
// servers.
#pragma once

#include <spdlog/spdlog.h>

namespace pasyn::server {

/// The "pasyn" logger (stderr, warnings and up unless the daemon sets another level).
spdlog::logger& log();

}  // namespace pasyn::server
