// pasyn: the operator's command line for a running pasyn-writerd. See README "Operations".
//
// Every command goes through the public client library, like any application: writes and
// operations over the daemon's socket (MultiplexedClient), `query` through a direct read-only
// SQLite connection (pasyn::Connection) on the database the daemon reports in its stats.
// Exit status: 0 done, 1 the daemon or SQLite refused or failed, 2 bad usage.
#include <CLI/CLI.hpp>
#include <charconv>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <iostream>
#include <optional>
#include <pasyn/pasyn.hpp>
#include <string>
#include <vector>

namespace {

struct Options {
  std::string socket;
  std::string instance;
  std::string database;  // query: overrides the path the daemon reports
  bool json = false;
  std::int64_t timeout_ms = 5000;
  std::string sql;
  std::vector<std::string> params;
  bool text_params = false;
  bool script = false;
  std::string mode = "TRUNCATE";
  std::string backup_path;
};

// ---- Output ------------------------------------------------------------------------------------

std::string json_string(std::string_view s) {
  std::string out = "\"";
  for (const char c : s) {
    switch (c) {
      case '"':
        out += "\\\"";
        break;
      case '\\':
        out += "\\\\";
        break;
      case '\n':
        out += "\\n";
        break;
      case '\r':
        out += "\\r";
        break;
      case '\t':
        out += "\\t";
        break;
      default:
        if (static_cast<unsigned char>(c) < 0x20) {
          char buf[8];
          std::snprintf(buf, sizeof buf, "\\u%04x", c);
          out += buf;
        } else {
          out += c;
        }
    }
  }
  return out + "\"";
}

std::string hex(const pasyn::Blob& b) {
  static constexpr char kDigits[] = "0123456789abcdef";
  std::string out;
  for (const auto byte : b) {
    out += kDigits[byte >> 4];
    out += kDigits[byte & 15];
  }
  return out;
}

std::string real_text(double d) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.17g", d);
  return buf;
}

// Text output: NULL, numbers, the text itself, blobs as x'hex' (sqlite3 shell style).
std::string text(const pasyn::Value& v) {
  switch (pasyn::type_of(v)) {
    case pasyn::ValueType::kNull:
      return "NULL";
    case pasyn::ValueType::kInteger:
      return std::to_string(std::get<std::int64_t>(v));
    case pasyn::ValueType::kReal:
      return real_text(std::get<double>(v));
    case pasyn::ValueType::kText:
      return std::get<std::string>(v);
    case pasyn::ValueType::kBlob:
      return "x'" + hex(std::get<pasyn::Blob>(v)) + "'";
  }
  return {};
}

// JSON output: blobs as {"blob": "<hex>"}.
std::string json(const pasyn::Value& v) {
  switch (pasyn::type_of(v)) {
    case pasyn::ValueType::kNull:
      return "null";
    case pasyn::ValueType::kInteger:
      return std::to_string(std::get<std::int64_t>(v));
    case pasyn::ValueType::kReal:
      return real_text(std::get<double>(v));
    case pasyn::ValueType::kText:
      return json_string(std::get<std::string>(v));
    case pasyn::ValueType::kBlob:
      return "{\"blob\":" + json_string(hex(std::get<pasyn::Blob>(v))) + "}";
  }
  return {};
}

void print_report(const pasyn::Report& report, bool as_json) {
  if (as_json) {
    std::string out = "{";
    for (std::size_t i = 0; i < report.size(); ++i) {
      if (i) out += ",";
      out += json_string(report[i].first) + ":" + json(report[i].second);
    }
    std::cout << out << "}\n";
    return;
  }
  std::size_t width = 0;
  for (const auto& [name, value] : report) width = std::max(width, name.size());
  for (const auto& [name, value] : report) {
    std::cout << name << std::string(width + 2 - name.size(), ' ') << text(value) << "\n";
  }
}

void print_rows(const std::vector<std::string>& columns, const std::vector<pasyn::Row>& rows,
                bool as_json) {
  if (as_json) {
    std::string out = "[";
    for (std::size_t r = 0; r < rows.size(); ++r) {
      if (r) out += ",";
      out += "{";
      for (std::size_t c = 0; c < rows[r].size(); ++c) {
        if (c) out += ",";
        const std::string name = c < columns.size() ? columns[c] : std::to_string(c);
        out += json_string(name) + ":" + json(rows[r][c]);
      }
      out += "}";
    }
    std::cout << out << "]\n";
    return;
  }
  // Tab-separated with a header line, easy to cut/awk.
  for (std::size_t c = 0; c < columns.size(); ++c) std::cout << (c ? "\t" : "") << columns[c];
  if (!columns.empty()) std::cout << "\n";
  for (const auto& row : rows) {
    for (std::size_t c = 0; c < row.size(); ++c) std::cout << (c ? "\t" : "") << text(row[c]);
    std::cout << "\n";
  }
}

// ---- Commands ----------------------------------------------------------------------------------

// Parameters from the command line: an integer or a real when the whole text is one, NULL for
// the word NULL, text otherwise (all text with --text-params).
pasyn::Params parse_params(const Options& o) {
  pasyn::Params params;
  for (const auto& p : o.params) {
    if (!o.text_params) {
      std::int64_t i = 0;
      if (auto [end, ec] = std::from_chars(p.data(), p.data() + p.size(), i);
          ec == std::errc() && end == p.data() + p.size() && !p.empty()) {
        params.emplace_back(i);
        continue;
      }
      double d = 0;
      if (auto [end, ec] = std::from_chars(p.data(), p.data() + p.size(), d);
          ec == std::errc() && end == p.data() + p.size() && !p.empty()) {
        params.emplace_back(d);
        continue;
      }
      if (p == "NULL") {
        params.emplace_back(nullptr);
        continue;
      }
    }
    params.emplace_back(p);
  }
  return params;
}

std::string socket_of(const Options& o) {
  if (!o.socket.empty()) return o.socket;
  return "/run/pasyn/" + o.instance + ".sock";
}

pasyn::MultiplexedClient connect(const Options& o) {
  pasyn::ClientOptions options;
  options.connect_timeout = std::chrono::milliseconds(o.timeout_ms);
  return pasyn::MultiplexedClient(socket_of(o), options);
}

const pasyn::Value* find(const pasyn::Report& report, std::string_view name) {
  for (const auto& [n, v] : report) {
    if (n == name) return &v;
  }
  return nullptr;
}

int ping(const Options& o) {
  const auto started = std::chrono::steady_clock::now();
  auto client = connect(o);
  client.ping();
  const double ms =
      std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - started).count();
  if (o.json) {
    std::cout << "{\"ok\":true,\"socket\":" << json_string(client.socket_path())
              << ",\"ms\":" << real_text(ms) << "}\n";
  } else {
    std::printf("pong from %s in %.2f ms\n", client.socket_path().c_str(), ms);
  }
  return 0;
}

int exec(const Options& o) {
  auto client = connect(o);
  if (o.script) {
    client.executescript(o.sql);
    print_report({{"ok", std::int64_t{1}}}, o.json);
    return 0;
  }
  const std::int64_t changes = client.execute(o.sql, parse_params(o));
  print_report({{"changes", changes}}, o.json);
  return 0;
}

int query(const Options& o) {
  std::string database = o.database;
  if (database.empty()) {
    auto client = connect(o);
    const auto stats = client.stats();
    const auto* path = find(stats, "database");
    if (!path || pasyn::type_of(*path) != pasyn::ValueType::kText) {
      throw pasyn::ProtocolError("the daemon did not report its database path");
    }
    database = std::get<std::string>(*path);
  }
  auto db = pasyn::connect(database, pasyn::OpenFlags::readonly());
  const auto rows = db.execute_fetchall(o.sql, parse_params(o));
  print_rows(db.last_column_names(), rows, o.json);
  return 0;
}

int run(CLI::App& app, const Options& o) {
  if (app.got_subcommand("ping")) return ping(o);
  if (app.got_subcommand("stats")) {
    print_report(connect(o).stats(), o.json);
    return 0;
  }
  if (app.got_subcommand("exec")) return exec(o);
  if (app.got_subcommand("query")) return query(o);
  if (app.got_subcommand("checkpoint")) {
    print_report(connect(o).checkpoint(o.mode), o.json);
    return 0;
  }
  if (app.got_subcommand("backup")) {
    // A file name inside the daemon's --backup-dir, sent as given (a path is refused there).
    print_report(connect(o).backup(o.backup_path), o.json);
    return 0;
  }
  if (app.got_subcommand("shutdown")) {
    connect(o).shutdown_server();
    print_report({{"ok", std::int64_t{1}}}, o.json);
    return 0;
  }
  return 2;
}

}  // namespace

int main(int argc, char** argv) {
  Options o;
  CLI::App app{"pasyn: operate a running pasyn-writerd"};
  app.set_version_flag("--version", "pasyn " PASYN_VERSION);
  auto* socket = app.add_option("--socket", o.socket, "the daemon's Unix socket");
  app.add_option("--instance", o.instance, "the service instance NAME (/run/pasyn/NAME.sock)")
      ->type_name("NAME")
      ->excludes(socket);
  app.add_flag("--json", o.json, "print JSON instead of text");
  app.add_option("--timeout", o.timeout_ms, "milliseconds to connect and handshake")
      ->check(CLI::PositiveNumber)
      ->capture_default_str();
  app.require_subcommand(1);

  app.add_subcommand("ping", "check that the daemon answers");
  app.add_subcommand("stats",
                     "live figures: requests, batches, commit latency, queue, connections, WAL");
  auto* exec_cmd = app.add_subcommand("exec", "run one write statement through the daemon");
  exec_cmd->add_option("sql", o.sql, "the SQL statement")->required();
  auto* exec_params = exec_cmd->add_option(
      "params", o.params, "parameters for ?: integers and reals as such, NULL as NULL, else text");
  exec_cmd->add_flag("--script", o.script, "several statements, run atomically, no parameters")
      ->excludes(exec_params);
  exec_cmd->add_flag("--text-params", o.text_params, "bind every parameter as text");
  auto* query_cmd =
      app.add_subcommand("query", "run a read-only query directly on the database file");
  query_cmd->add_option("sql", o.sql, "the SELECT statement")->required();
  query_cmd->add_option("params", o.params, "parameters, as for exec");
  query_cmd->add_flag("--text-params", o.text_params, "bind every parameter as text");
  query_cmd->add_option("--database", o.database,
                        "the database file (default: the one the daemon reports)");
  auto* checkpoint_cmd = app.add_subcommand("checkpoint", "checkpoint the WAL");
  checkpoint_cmd->add_option("--mode", o.mode, "PASSIVE, FULL, RESTART or TRUNCATE")
      ->check(CLI::IsMember({"PASSIVE", "FULL", "RESTART", "TRUNCATE"}, CLI::ignore_case))
      ->capture_default_str();
  auto* backup_cmd =
      app.add_subcommand("backup", "copy the database online to NAME in the daemon's --backup-dir");
  backup_cmd
      ->add_option("name", o.backup_path, "file name in --backup-dir (no '/', no leading '.')")
      ->required();
  app.add_subcommand("shutdown", "finish queued work and stop the daemon");

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e) == 0 ? 0 : 2;  // --help and --version exit 0; bad usage exits 2
  }
  if (o.socket.empty() && o.instance.empty()) {
    std::fprintf(stderr, "pasyn: give --socket PATH or --instance NAME\n");
    return 2;
  }
  try {
    return run(app, o);
  } catch (const pasyn::Error& e) {
    if (o.json) {
      std::cout << "{\"ok\":false,\"error\":" << json_string(e.what()) << "}\n";
    }
    std::fprintf(stderr, "pasyn: %s\n", e.what());
    return 1;
  }
}
