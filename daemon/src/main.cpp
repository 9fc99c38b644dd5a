// pasyn-writerd: serves one SQLite database's writes on a Unix socket. See README "Daemon flags".
#include <CLI/CLI.hpp>
#include <cstdio>
#include <cstdlib>
#include <map>

#include "log.hpp"
#include "paths.hpp"
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

}  // namespace

int main(int argc, char** argv) {
  using pasyn::server::log;
  pasyn::server::Config config;
  config.handle_signals = true;
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
                 "read flags from this file (`synchronous = \"normal\"`, one per line); "
                 "command-line flags win")
      ->type_name("FILE");
  app.add_option("--database", config.database_path, "SQLite database file (created if missing)")
      ->required(instance.empty());
  app.add_option("--socket", config.socket_path,
                 "Unix socket to listen on (default: <database>-pasyn.sock)");
  app.add_option("--synchronous", synchronous,
                 "full: acknowledged writes survive power loss; normal: they survive crashes")
      ->check(CLI::IsMember({"full", "normal"}))
      ->capture_default_str();
  app.add_option("--busy-timeout", busy_ms,
                 "milliseconds to wait for other processes writing the file directly")
      ->transform(duration)
      ->check(CLI::NonNegativeNumber)
      ->capture_default_str();
  app.add_option("--max-frame", config.max_frame, "largest protocol frame in bytes")
      ->check(CLI::Range(pasyn::proto::kMinMaxFrame, 1u << 30))
      ->capture_default_str();
  app.add_option("--handshake-timeout", handshake_ms,
                 "milliseconds a new connection has to send HELLO")
      ->transform(duration)
      ->check(CLI::PositiveNumber)
      ->capture_default_str();
  app.add_option("--drain-timeout", drain_ms,
                 "milliseconds to finish queued work on shutdown before interrupting it")
      ->transform(duration)
      ->check(CLI::PositiveNumber)
      ->capture_default_str();
  app.add_option("--lock-wait", lock_wait_ms,
                 "milliseconds a write waits for another connection's transaction before it "
                 "fails with a timeout (0: fail at once)")
      ->transform(duration)
      ->check(CLI::NonNegativeNumber)
      ->capture_default_str();
  app.add_option("--transaction-idle-timeout", idle_ms,
                 "milliseconds an open transaction may go without a request before it is "
                 "rolled back")
      ->transform(duration)
      ->check(CLI::PositiveNumber)
      ->capture_default_str();
  app.add_option("--log-level", log_level, "trace, debug, info, warn, error, critical or off")
      ->check(CLI::IsMember({"trace", "debug", "info", "warn", "error", "critical", "off"}))
      ->capture_default_str();
  CLI11_PARSE(app, argc, argv);

  config.synchronous_full = synchronous == "full";
  config.busy_timeout = std::chrono::milliseconds(busy_ms);
  config.handshake_timeout = std::chrono::milliseconds(handshake_ms);
  config.drain_timeout = std::chrono::milliseconds(drain_ms);
  config.lock_wait = std::chrono::milliseconds(lock_wait_ms);
  config.transaction_idle_timeout = std::chrono::milliseconds(idle_ms);
  log().set_level(spdlog::level::from_str(log_level));

  namespace sd = pasyn::server::systemd;
  if (sd::stderr_is_journal()) sd::log_to_journal();
  if (std::getenv("NOTIFY_SOCKET")) config.notify = sd::notify;
  if (const auto interval = sd::watchdog_interval()) config.watchdog_interval = *interval;
  try {
    config.listen_fd = sd::take_listen_fd();
    pasyn::server::Server server(std::move(config));
    server.run();
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
