// pasyn-writerd: serves one SQLite database's writes on a Unix socket. See README "Daemon flags".
#include <grp.h>
#include <pwd.h>
#include <sqlite3.h>
#include <sys/resource.h>

#include <CLI/CLI.hpp>
#include <charconv>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <optional>

#include "log.hpp"
#include "paths.hpp"
#include "readers.hpp"
#include "server.hpp"
#include "systemd.hpp"

namespace {

// --instance must be known before the real parse: it sets the defaults of --database, --socket
// and --config. A first, lenient CLI11 pass reads only it.
std::string find_instance(int argc, char** argv) {
  std::string instance;
  CLI::App pre;
  pre.set_help_flag();
  pre.allow_extras();
  pre.add_option("--instance", instance);
  try {
    pre.parse(argc, argv);
  } catch (const CLI::ParseError&) {
    // The real parse reports it.
  }
  return instance;
}

// A user or group given by name or number, as its id.
std::optional<std::uint32_t> parse_id(const std::string& text, bool group) {
  std::uint32_t id = 0;
  if (auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), id);
      ec == std::errc() && end == text.data() + text.size() && !text.empty()) {
    return id;
  }
  std::vector<char> buf(16384);
  if (group) {
    struct group g {
    }, *found = nullptr;
    if (::getgrnam_r(text.c_str(), &g, buf.data(), buf.size(), &found) == 0 && found) {
      return found->gr_gid;
    }
  } else {
    passwd p{}, *found = nullptr;
    if (::getpwnam_r(text.c_str(), &p, buf.data(), buf.size(), &found) == 0 && found) {
      return found->pw_uid;
    }
  }
  return std::nullopt;
}

// CLI11 check: every entry names an existing user (or group).
CLI::Validator known_id(bool group) {
  return CLI::Validator(
      [group](std::string& text) -> std::string {
        return parse_id(text, group)
                   ? std::string()
                   : std::string("no such ") + (group ? "group" : "user") + ": " + text;
      },
      group ? "GROUP" : "USER");
}

std::vector<std::uint32_t> ids(const std::vector<std::string>& names, bool group) {
  std::vector<std::uint32_t> out;
  for (const auto& n : names) out.push_back(*parse_id(n, group));
  return out;
}

// A flag that takes auto, on or off (--batch-wait, --writer-io), and its value as the Config enum.
CLI::Option* add_auto_on_off(CLI::App& app, const std::string& name, std::string& value,
                             const std::string& help) {
  return app.add_option(name, value, help)
      ->check(CLI::IsMember({"auto", "on", "off"}))
      ->capture_default_str();
}
template <typename Setting>
Setting auto_on_off(const std::string& value) {
  return value == "on" ? Setting::kOn : value == "off" ? Setting::kOff : Setting::kAuto;
}

}  // namespace

int main(int argc, char** argv) {
  using pasyn::server::log;
  // SQLite's memory statistics take a process-wide mutex around every allocation; the daemon
  // reads none of them. Process-wide, so it is set here, in pasyn-writerd only: the library and
  // in-process servers leave their host application's SQLite as it is. Must precede any other
  // SQLite call.
  sqlite3_config(SQLITE_CONFIG_MEMSTATUS, 0);
  pasyn::server::Config config;
  config.handle_signals = true;
  config.lock_database_file = true;
  std::string synchronous = "full";
  std::string log_level = "info";
  std::int64_t busy_ms = config.busy_timeout.count();
  std::int64_t handshake_ms = config.handshake_timeout.count();
  std::int64_t drain_ms = config.drain_timeout.count();
  std::int64_t lock_wait_ms = config.lock_wait.count();
  std::int64_t idle_ms = config.transaction_idle_timeout.count();
  // Durations: a number of milliseconds, or a number with a unit ("250ms", "5s", "2min").
  const auto duration = CLI::AsNumberWithUnit(
      std::map<std::string, std::int64_t>{{"ms", 1}, {"s", 1000}, {"min", 60000}});
  // At most 2^31 - 1 ms (24.8 days): SQLite's busy timeout is an int, and a deadline of now plus
  // a duration near INT64_MAX nanoseconds overflows into the past (a probe's 300000000min
  // expired at once).
  constexpr std::int64_t kMaxMs = 2147483647;
  const auto at_least_0 = CLI::Range(std::int64_t{0}, kMaxMs);
  const auto at_least_1 = CLI::Range(std::int64_t{1}, kMaxMs);

  const std::string instance = find_instance(argc, argv);
  std::string config_file;
  if (!instance.empty()) {
    namespace sd = pasyn::server::systemd;
    config.database_path = sd::state_directory() + "/" + instance + ".sqlite";
    config.socket_path = sd::runtime_directory() + "/" + instance + ".sock";
    config_file = sd::configuration_directory() + "/" + instance + ".conf";
  }

  CLI::App app{"pasyn-writerd: the single writer of a SQLite database, serving many clients"};
  app.set_version_flag("--version", "pasyn-writerd " PASYN_VERSION);
  app.add_option("--instance",
                 "serve the service instance NAME (pasyn-writerd@NAME): database "
                 "/var/lib/pasyn/NAME.sqlite, socket /run/pasyn/NAME.sock, flags "
                 "from /etc/pasyn/NAME.conf if it exists")
      ->type_name("NAME")
      ->check([](const std::string& name) -> std::string {
        if (name.empty() || name.front() == '.' || name.find('/') != std::string::npos) {
          return "an instance name is a file name: not empty, no '/', not starting with '.'";
        }
        return {};
      });
  // Flags in a file, one `name = value` per line with the long flag names (TOML/INI, e.g.
  // `synchronous = "normal"`); flags on the command line win over the file.
  app.set_config("--config", config_file,
                 "read flags from this file (`synchronous = \"normal\"`, one per line; an "
                 "unknown name is an error); command-line flags win; with --instance, replaces "
                 "/etc/pasyn/NAME.conf")
      ->type_name("FILE");
  // A misspelt flag in the file is refused, not ignored (`synchronus = "normal"` would
  // otherwise start a daemon at synchronous=full).
  app.allow_config_extras(CLI::config_extras_mode::error);
  app.add_option("--database", config.database_path, "SQLite database file (created if missing)")
      ->required(instance.empty());
  app.add_option(
      "--socket", config.socket_path,
      "Unix socket to listen on (default: <database>-pasyn.sock; /tmp/pasyn-UID/HASH.sock if too "
      "long, or if the database's directory is writable by all)");
  app.add_option("--synchronous", synchronous,
                 "full: acknowledged writes survive power loss; normal: they survive crashes")
      ->check(CLI::IsMember({"full", "normal"}))
      ->capture_default_str();
  std::string batch_wait = "off";
  add_auto_on_off(app, "--batch-wait", batch_wait,
                  "before a batch, wait briefly (at most half a COMMIT, at most 1 ms) for the "
                  "connections of the last batch: auto: at synchronous=full only; on: at both "
                  "settings; off: never");
  std::string writer_io = "auto";
  add_auto_on_off(app, "--writer-io", writer_io,
                  "the writer thread reads and answers the connections itself while it has no "
                  "batch to run (the I/O thread takes over only while it is busy for over 2 ms): "
                  "auto: at synchronous=normal only; on: at both settings; off: never");
  std::string foreign_keys = "off";
  app.add_option("--foreign-keys", foreign_keys,
                 "on: the writer connection enforces foreign key constraints (clients cannot "
                 "change it)")
      ->check(CLI::IsMember({"on", "off"}))
      ->capture_default_str();
  app.add_option("--busy-timeout", busy_ms,
                 "milliseconds to wait for other processes writing the file directly")
      ->transform(duration)
      ->check(at_least_0)
      ->capture_default_str();
  app.add_option("--max-frame", config.max_frame, "largest protocol frame in bytes")
      ->check(CLI::Range(pasyn::proto::kMinMaxFrame, 1u << 30))
      ->capture_default_str();
  app.add_option("--handshake-timeout", handshake_ms,
                 "milliseconds a new connection has to send HELLO")
      ->transform(duration)
      ->check(at_least_1)
      ->capture_default_str();
  app.add_option("--drain-timeout", drain_ms,
                 "milliseconds to finish queued work on shutdown before interrupting it")
      ->transform(duration)
      ->check(at_least_1)
      ->capture_default_str();
  app.add_option("--lock-wait", lock_wait_ms,
                 "milliseconds a write waits for another connection's transaction before it "
                 "fails with a timeout (0: fail at once)")
      ->transform(duration)
      ->check(at_least_0)
      ->capture_default_str();
  app.add_option("--transaction-idle-timeout", idle_ms,
                 "milliseconds an open transaction may go without a request before it is "
                 "rolled back")
      ->transform(duration)
      ->check(at_least_1)
      ->capture_default_str();
  // Limits (PROTOCOL.md §7).
  std::int64_t statement_ms = config.statement_timeout.count();
  app.add_option("--max-sql-length", config.max_sql_length,
                 "longest SQL text of one request in bytes (longer: TOO_LARGE)")
      ->check(CLI::Range(std::size_t{1}, std::size_t{1000000000}))
      ->capture_default_str();
  app.add_option("--max-params", config.max_params,
                 "most parameters of one statement (more: TOO_LARGE)")
      ->check(CLI::Range(1u, 250000u))
      ->capture_default_str();
  app.add_option("--max-connections", config.max_connections,
                 "most open client connections (one more is refused with LIMIT)")
      ->check(CLI::Range(std::size_t{1}, std::size_t{1} << 20))
      ->capture_default_str();
  app.add_option("--max-inflight", config.max_inflight,
                 "unanswered requests per connection before the daemon stops reading from it")
      ->check(CLI::Range(std::size_t{1}, std::size_t{1} << 20))
      ->capture_default_str();
  app.add_option("--max-output", config.max_output,
                 "reply bytes buffered for a client that does not read them before it is "
                 "disconnected (at least --max-frame)")
      ->check(CLI::Range(std::size_t{64}, std::size_t{1} << 40))
      ->capture_default_str();
  app.add_option("--max-queued-bytes", config.max_queued_bytes,
                 "bytes of unanswered requests and unsent replies per connection before the "
                 "daemon stops reading from it (at least --max-frame)")
      ->check(CLI::Range(std::size_t{64}, std::size_t{1} << 40))
      ->capture_default_str();
  app.add_option("--max-total-bytes", config.max_total_bytes,
                 "the same bytes over all connections: past it no connection is read from (but the "
                 "client transaction's owner, under its own limit), and "
                 "the client holding the most unread replies is disconnected (at least "
                 "--max-queued-bytes)")
      ->check(CLI::Range(std::size_t{64}, std::size_t{1} << 44))
      ->capture_default_str();
  app.add_option("--wal-limit", config.wal_limit,
                 "WAL size in bytes past which the writer checkpoints with TRUNCATE, waiting "
                 "briefly for readers, to keep the WAL bounded")
      ->check(CLI::Range(std::size_t{1} << 16, std::size_t{1} << 40))
      ->capture_default_str();
  app.add_option("--feed-history", config.feed_history,
                 "bytes of committed changes the change feed keeps, so that a subscriber can "
                 "resume after a reconnect (PROTOCOL.md section 8)")
      ->check(CLI::Range(std::size_t{0}, std::size_t{1} << 40))
      ->capture_default_str();
  std::string checkpoint_mode = "internal";
  app.add_option("--checkpoint-mode", checkpoint_mode,
                 "internal: the daemon checkpoints the WAL (passively between batches, TRUNCATE "
                 "past --wal-limit and at shutdown); external: it never does on its own, another "
                 "program such as Litestream does (--wal-limit is then ignored)")
      ->check(CLI::IsMember({"internal", "external"}))
      ->capture_default_str();
  app.add_option("--idempotency-keys", config.idempotency_keys,
                 "how many of the most recent idempotency keys the daemon remembers")
      ->check(CLI::Range(std::size_t{1}, std::size_t{1} << 32))
      ->capture_default_str();
  app.add_option("--statement-timeout", statement_ms,
                 "milliseconds one request's statements may run before they are interrupted "
                 "(TIMEOUT; 0: no limit)")
      ->transform(duration)
      ->check(at_least_0)
      ->capture_default_str();

  // Access control (PROTOCOL.md §3).
  std::string socket_mode = "0660", socket_group;
  std::vector<std::string> allow_uid, allow_gid, read_only_uid, read_only_gid, admin_uid, admin_gid;
  app.add_option("--socket-mode", socket_mode, "permissions of the socket file (octal)")
      ->check([](const std::string& m) -> std::string {
        unsigned v = 0;
        auto [end, ec] = std::from_chars(m.data(), m.data() + m.size(), v, 8);
        return ec == std::errc() && end == m.data() + m.size() && v <= 0777
                   ? std::string()
                   : "an octal mode such as 0660";
      })
      ->capture_default_str();
  app.add_option("--socket-group", socket_group, "group of the socket file (name or gid)")
      ->check(known_id(true));
  app.add_option("--allow-uid", allow_uid,
                 "only these users (names or uids) may connect, with --allow-gid's groups and the "
                 "daemon's own user; repeat or separate with commas")
      ->delimiter(',')
      ->check(known_id(false));
  app.add_option("--allow-gid", allow_gid,
                 "only members of these groups (names or gids) may connect, with --allow-uid's "
                 "users")
      ->delimiter(',')
      ->check(known_id(true));
  app.add_option("--read-only-uid", read_only_uid,
                 "these users may connect but only read (PING, STATS, read-only statements)")
      ->delimiter(',')
      ->check(known_id(false));
  app.add_option("--read-only-gid", read_only_gid, "members of these groups may only read")
      ->delimiter(',')
      ->check(known_id(true));
  app.add_option("--admin-uid", admin_uid,
                 "only these users may send SHUTDOWN, CHECKPOINT and BACKUP, with --admin-gid's "
                 "groups (default, when both are unset: the daemon's own user and root)")
      ->delimiter(',')
      ->check(known_id(false));
  app.add_option("--admin-gid", admin_gid,
                 "members of these groups may send SHUTDOWN, CHECKPOINT and BACKUP")
      ->delimiter(',')
      ->check(known_id(true));
  app.add_option("--backup-dir", config.backup_dir,
                 "directory BACKUP writes into; a request names a file in it (default: "
                 "backups/ beside the database, created 0750)");

  bool prepare_readers = false;
  app.add_flag("--prepare-readers", prepare_readers,
               "only create the database's -wal and -shm files if it exists (so readers that "
               "may not create files can read it before the daemon runs), then exit");
  app.add_option("--log-level", log_level, "trace, debug, info, warn, error, critical or off")
      ->check(CLI::IsMember({"trace", "debug", "info", "warn", "error", "critical", "off"}))
      ->capture_default_str();
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e) == 0 ? 0 : 2;  // --help and --version exit 0; bad usage exits 2
  }

  if (prepare_readers) {
    try {
      pasyn::server::prepare_for_readers(config.database_path);
    } catch (const pasyn::server::StartError& e) {
      std::fprintf(stderr, "pasyn-writerd: %s\n", e.what());
      return 1;
    }
    return 0;
  }
  config.synchronous_full = synchronous == "full";
  config.batch_wait = auto_on_off<pasyn::server::Config::BatchWait>(batch_wait);
  config.writer_io = auto_on_off<pasyn::server::Config::WriterIo>(writer_io);
  config.foreign_keys = foreign_keys == "on";
  config.checkpoint_mode = checkpoint_mode == "external"
                               ? pasyn::server::Config::CheckpointMode::kExternal
                               : pasyn::server::Config::CheckpointMode::kInternal;
  config.busy_timeout = std::chrono::milliseconds(busy_ms);
  config.handshake_timeout = std::chrono::milliseconds(handshake_ms);
  config.drain_timeout = std::chrono::milliseconds(drain_ms);
  config.lock_wait = std::chrono::milliseconds(lock_wait_ms);
  config.transaction_idle_timeout = std::chrono::milliseconds(idle_ms);
  config.statement_timeout = std::chrono::milliseconds(statement_ms);
  if (config.max_output < config.max_frame) {
    std::fprintf(stderr, "pasyn-writerd: --max-output (%zu) must be at least --max-frame (%u)\n",
                 config.max_output, config.max_frame);
    return 2;
  }
  if (config.max_queued_bytes < config.max_frame) {
    std::fprintf(stderr,
                 "pasyn-writerd: --max-queued-bytes (%zu) must be at least --max-frame (%u)\n",
                 config.max_queued_bytes, config.max_frame);
    return 2;
  }
  if (config.max_total_bytes < config.max_queued_bytes) {
    std::fprintf(stderr,
                 "pasyn-writerd: --max-total-bytes (%zu) must be at least --max-queued-bytes "
                 "(%zu)\n",
                 config.max_total_bytes, config.max_queued_bytes);
    return 2;
  }
  config.socket_mode = static_cast<std::uint32_t>(std::stoul(socket_mode, nullptr, 8));
  if (!socket_group.empty()) config.socket_gid = *parse_id(socket_group, true);
  config.allow_uids = ids(allow_uid, false);
  config.allow_gids = ids(allow_gid, true);
  config.read_only_uids = ids(read_only_uid, false);
  config.read_only_gids = ids(read_only_gid, true);
  config.admin_uids = ids(admin_uid, false);
  config.admin_gids = ids(admin_gid, true);
  log().set_level(spdlog::level::from_str(log_level));

  // One descriptor per client: take every descriptor the hard limit allows (--max-connections
  // is the real bound).
  if (rlimit files{}; ::getrlimit(RLIMIT_NOFILE, &files) == 0) {
    if (files.rlim_cur < files.rlim_max) {
      files.rlim_cur = files.rlim_max;
      ::setrlimit(RLIMIT_NOFILE, &files);
    }
    // Past it a connection waits unanswered in the backlog, not refused with LIMIT as past
    // --max-connections (probe31: 71 of 120 peers got nothing under `ulimit -n 64`).
    constexpr rlim_t kOwnFiles = 32;  // the database, its WAL and -shm, the socket, logs, ...
    if (files.rlim_cur != RLIM_INFINITY && files.rlim_cur < config.max_connections + kOwnFiles) {
      log().warn(
          "pasyn-writerd may open {} files (ulimit -n, LimitNOFILE=), fewer than --max-connections "
          "({}) and {} of its own: past that, new connections wait unanswered until others close",
          static_cast<unsigned long long>(files.rlim_cur), config.max_connections, kOwnFiles);
    }
  }

  namespace sd = pasyn::server::systemd;
  if (sd::stderr_is_journal()) sd::log_to_journal();
  if (!config.checkpoints_internally() && app.count("--wal-limit") > 0) {
    log().warn(
        "--wal-limit is ignored with --checkpoint-mode external: the program that "
        "checkpoints (Litestream) bounds the WAL (past --wal-limit, and each time the WAL "
        "doubles after, the daemon only warns that nothing checkpointed it)");
  }
  if (std::getenv("NOTIFY_SOCKET")) config.notify = sd::notify;
  if (const auto interval = sd::watchdog_interval()) config.watchdog_interval = *interval;
  // A file-size limit (ulimit -f, LimitFSIZE=) would kill the daemon with SIGXFSZ, unannounced
  // and with its socket left behind; ignored, the write fails with EFBIG: an I/O error, which
  // takes the documented way (a failed commit stops the daemon with exit status 74).
  std::signal(SIGXFSZ, SIG_IGN);
  try {
    config.listen_fd = sd::take_listen_fd();
    pasyn::server::Server server(std::move(config));
    server.run();
  } catch (const pasyn::server::StorageError& e) {
    // Logged at critical by the writer. Exit with the status the unit does not restart on.
    sd::notify(std::string("STATUS=stopped: ") + e.what());
    return pasyn::server::kExitStorageFailure;
  } catch (const pasyn::server::StartError& e) {
    if (sd::stderr_is_journal()) {
      log().critical("cannot start: {}", e.what());
    } else {
      std::fprintf(stderr, "pasyn-writerd: %s\n", e.what());
    }
    sd::notify(std::string("STATUS=cannot start: ") + e.what());
    return 1;
  }
  return 0;
}
