// pasyn-writerd under systemd: socket activation, sd_notify and the journal. Every function is a
// no-op (or returns "none") when the daemon was not started by systemd, so the daemon behaves
// the same by hand and as a service.
//
// Protocol with the service manager (see systemd/pasyn-writerd@.service):
//  * a listening socket passed with LISTEN_FDS (the .socket unit) is used instead of binding one;
//    it must be exactly one listening AF_UNIX stream socket, or the daemon refuses to start;
//  * READY=1 once the database is open, the writer thread started and the acceptor live;
//  * STATUS=<live figures> while serving, STOPPING=1 when shutdown begins;
//  * WATCHDOG=1 at half of WATCHDOG_USEC, but only while the writer thread makes progress.
#pragma once

#include <chrono>
#include <optional>
#include <string>
#include <string_view>

namespace pasyn::server::systemd {

/// The listening socket systemd passed to this process, or -1 when it passed none. Throws
/// StartError(kSocket) when it passed something else than one listening Unix stream socket.
/// The caller owns the descriptor.
int take_listen_fd();

/// Sends `state` ("READY=1", "STATUS=...") to the service manager; nothing when NOTIFY_SOCKET is
/// unset. Thread-safe.
void notify(const std::string& state);

/// The watchdog interval systemd expects pings within, when it set one for this process.
std::optional<std::chrono::microseconds> watchdog_interval();

/// True when stderr is connected to the journal (JOURNAL_STREAM names it).
bool stderr_is_journal();

/// Sends the daemon's log to the journal as structured entries with their priority (instead of
/// timestamped lines on stderr, which journald would stamp a second time).
void log_to_journal();

/// Directories of a service instance: systemd's $STATE_DIRECTORY, $RUNTIME_DIRECTORY and
/// $CONFIGURATION_DIRECTORY (first entry) when set, else /var/lib/pasyn, /run/pasyn and
/// /etc/pasyn.
std::string state_directory();
std::string runtime_directory();
std::string configuration_directory();

}  // namespace pasyn::server::systemd
