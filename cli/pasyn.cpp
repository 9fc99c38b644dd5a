// pasyn: the operator's command line for a running pasyn-writerd. See README "Operations".
//
// Every command goes through the public client library, like any application: writes and
// operations over the daemon's socket (MultiplexedClient), `query` through a direct read-only
// SQLite connection (pasyn::Connection) on the database the daemon reports in its stats.
// Exit status: 0 done, 1 the daemon or SQLite refused or failed (or any other error), 2 bad usage,
// 75 an exec whose outcome is unknown (sent, then the connection was lost or --timeout passed).
// Options go before or after the subcommand (`pasyn --socket S stats --json` and
// `pasyn stats --socket S --json` are the same). --timeout bounds the connect and every request.
// Over 600 lines on purpose: one short function per command and the whole command table
// (main) in one file, so that what `pasyn --help` promises and what runs sit side by side; the
// JSON helpers are in json.cpp.
#include <CLI/CLI.hpp>
#include <algorithm>
#include <charconv>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <filesystem>
#include <iostream>
#include <limits>
#include <optional>
#include <pasyn/pasyn.hpp>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

#include "json.hpp"

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
  bool typed_params = false;
  bool prometheus = false;
  bool script = false;
  std::string mode = "TRUNCATE";
  std::string backup_path;
  std::vector<std::string> tables;     // watch
  std::optional<std::uint64_t> after;  // watch --after
  std::optional<std::uint64_t> epoch;  // watch --epoch (with --after)
  std::optional<std::uint64_t> count;  // watch --count
};

// Bad usage found after parsing (exit status 2).
struct UsageError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

// A write sent whose outcome is unknown: it may have committed (exit status 75, EX_TEMPFAIL).
struct OutcomeUnknown : std::runtime_error {
  using std::runtime_error::runtime_error;
};
constexpr int kExitOutcomeUnknown = 75;
// --timeout's upper bound, about 24 days: CLI11's PositiveNumber printed its own (DBL_MAX) in
// full in the message for a bad value.
constexpr std::int64_t kMaxTimeoutMs = std::numeric_limits<std::int32_t>::max();

// ---- Output ------------------------------------------------------------------------------------

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

using pasyn::json::json_string;
std::string json_real(double d) { return pasyn::json::json_number(d); }

// JSON output: blobs as {"blob": "<hex>"}.
std::string json(const pasyn::Value& v) {
  switch (pasyn::type_of(v)) {
    case pasyn::ValueType::kNull:
      return "null";
    case pasyn::ValueType::kInteger:
      return std::to_string(std::get<std::int64_t>(v));
    case pasyn::ValueType::kReal:
      return json_real(std::get<double>(v));
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

std::string tsv_field(std::string_view s) {
  std::string out;
  out.reserve(s.size());
  for (const char c : s) {
    switch (c) {
      case '\\':
        out += "\\\\";
        break;
      case '\t':
        out += "\\t";
        break;
      case '\n':
        out += "\\n";
        break;
      case '\r':
        out += "\\r";
        break;
      default:
        out += c;
    }
  }
  return out;
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
  // Tab-separated with a header line, easy to cut/awk: a backslash, tab, newline or carriage
  // return inside a name or value is written \\, \t, \n or \r (as PostgreSQL's COPY does), so
  // that every row is one line with one field per column.
  for (std::size_t c = 0; c < columns.size(); ++c) {
    std::cout << (c ? "\t" : "") << tsv_field(columns[c]);
  }
  if (!columns.empty()) std::cout << "\n";
  for (const auto& row : rows) {
    for (std::size_t c = 0; c < row.size(); ++c)
      std::cout << (c ? "\t" : "") << tsv_field(text(row[c]));
    std::cout << "\n";
  }
}

// Prometheus text exposition format (for node_exporter's textfile collector): every number STATS
// reports, named pasyn_<figure> with Prometheus' unit suffixes (_total for counters, _seconds,
// _bytes), a HELP and a TYPE line each; the text figures as labels of pasyn_info.
void print_prometheus(const pasyn::Report& report) {
  struct Metric {
    std::string_view figure;  // the STATS name
    std::string_view name;    // the metric's name after pasyn_
    std::string_view type;
    double divisor;  // figure / divisor = value in the metric's unit
    std::string_view help;
  };
  static constexpr Metric kKnown[] = {
      {"uptime_ms", "uptime_seconds", "gauge", 1e3, "Time since the daemon started."},
      {"connections", "connections", "gauge", 1, "Open client connections."},
      {"requests", "requests_total", "counter", 1, "Requests answered."},
      {"batches", "batches_total", "counter", 1, "Batch transactions committed."},
      {"mean_batch_size", "batch_size_mean", "gauge", 1, "Mean requests per batch."},
      {"batch_waits", "batch_waits_total", "counter", 1,
       "Batches the writer held back to fill with the last batch's connections."},
      {"batch_bytes_max", "batch_max_bytes", "gauge", 1,
       "Request bytes of the largest committed batch (1 MiB at most, unless one request is "
       "larger)."},
      {"commit_p50_us", "commit_p50_seconds", "gauge", 1e6,
       "Median COMMIT duration over the recent batches."},
      {"commit_p99_us", "commit_p99_seconds", "gauge", 1e6,
       "99th percentile COMMIT duration over the recent batches."},
      {"commit_max_us", "commit_max_seconds", "gauge", 1e6,
       "Longest COMMIT over the recent batches."},
      {"queue_depth", "queue_depth", "gauge", 1, "Requests submitted, not yet taken."},
      {"waiting_for_transaction", "waiting_for_transaction", "gauge", 1,
       "Requests waiting for another connection's transaction."},
      {"transaction_age_ms", "transaction_age_seconds", "gauge", 1e3,
       "Age of the open client transaction (absent: none)."},
      {"wal_bytes", "wal_bytes", "gauge", 1, "Size of the -wal file."},
  };
  const auto number = [](const pasyn::Value& v) -> std::optional<double> {
    if (pasyn::type_of(v) == pasyn::ValueType::kInteger) {
      return static_cast<double>(std::get<std::int64_t>(v));
    }
    if (pasyn::type_of(v) == pasyn::ValueType::kReal) return std::get<double>(v);
    return std::nullopt;
  };
  const auto value_text = [](double d) {
    if (std::isnan(d)) return std::string("NaN");
    if (std::isinf(d)) return std::string(d > 0 ? "+Inf" : "-Inf");
    // The shortest text that reads back as d: fixed notation ("0.0001") when it fits.
    char buf[64];
    auto r = std::to_chars(buf, buf + sizeof buf, d, std::chars_format::fixed);
    if (r.ec != std::errc()) r = std::to_chars(buf, buf + sizeof buf, d);
    return std::string(buf, r.ec == std::errc() ? r.ptr : buf);
  };
  const auto label_value = [](std::string_view v) {
    std::string out;
    for (const char c : v) {
      if (c == '\\' || c == '"') out += '\\';
      if (c == '\n') {
        out += "\\n";
        continue;
      }
      out += c;
    }
    return out;
  };
  // Histograms: STATS reports NAME_le_BOUND (cumulative), NAME_sum and NAME_count; a NAME in
  // microseconds (…_us) or milliseconds (…_ms) becomes …_seconds, its bounds and sum scaled.
  struct Family {
    std::string base;
    std::string name;
    double divisor = 1;
    std::string lines;
  };
  std::vector<Family> families;
  const auto family_of = [&](const std::string& base) -> Family* {
    for (auto& f : families) {
      if (f.base == base) return &f;
    }
    return nullptr;
  };
  for (const auto& [figure, v] : report) {
    const auto at = figure.rfind("_le_");
    if (at == std::string::npos || !number(v)) continue;
    const std::string base = figure.substr(0, at);
    if (family_of(base)) continue;
    Family f{base, base, 1, {}};
    if (base.ends_with("_us")) f = {base, base.substr(0, base.size() - 3) + "_seconds", 1e6, {}};
    if (base.ends_with("_ms")) f = {base, base.substr(0, base.size() - 3) + "_seconds", 1e3, {}};
    families.push_back(std::move(f));
  }
  const auto in_family = [&](const std::string& figure, const pasyn::Value& v) {
    for (auto& f : families) {
      if (!figure.starts_with(f.base + "_")) continue;
      const std::string rest = figure.substr(f.base.size() + 1);
      const auto d = number(v);
      if (!d) return false;
      if (rest.starts_with("le_")) {
        const std::string bound = rest.substr(3);
        std::string le = "+Inf";
        if (bound != "inf") {
          char* end = nullptr;
          const double b = std::strtod(bound.c_str(), &end);
          if (end == bound.c_str() || *end != '\0') return false;
          le = value_text(b / f.divisor);
        }
        f.lines += "pasyn_" + f.name + "_bucket{le=\"" + le + "\"} " + value_text(*d) + "\n";
        return true;
      }
      if (rest == "sum") {
        f.lines += "pasyn_" + f.name + "_sum " + value_text(*d / f.divisor) + "\n";
        return true;
      }
      if (rest == "count") {
        f.lines += "pasyn_" + f.name + "_count " + value_text(*d) + "\n";
        return true;
      }
    }
    return false;
  };
  std::string info;
  std::string out;
  for (const auto& [figure, v] : report) {
    if (in_family(figure, v)) continue;
    if (pasyn::type_of(v) == pasyn::ValueType::kText) {
      info +=
          (info.empty() ? "" : ",") + figure + "=\"" + label_value(std::get<std::string>(v)) + "\"";
      continue;
    }
    const auto d = number(v);
    if (!d) continue;
    const Metric* m = nullptr;
    for (const auto& k : kKnown) {
      if (k.figure == figure) m = &k;
    }
    if (m && figure == "transaction_age_ms" && *d < 0) continue;  // no open transaction
    if (m) {
      out += "# HELP pasyn_" + std::string(m->name) + " " + std::string(m->help) + "\n";
      out += "# TYPE pasyn_" + std::string(m->name) + " " + std::string(m->type) + "\n";
      out += "pasyn_" + std::string(m->name) + " " + value_text(*d / m->divisor) + "\n";
    } else {  // a figure this CLI does not know yet: exposed as it is
      out += "# HELP pasyn_" + figure + " STATS figure " + figure + ".\n";
      out += "# TYPE pasyn_" + figure + " untyped\n";
      out += "pasyn_" + figure + " " + value_text(*d) + "\n";
    }
  }
  for (const auto& f : families) {
    std::string help = "Histogram of the STATS figure " + f.base + ".";
    if (f.base == "batch_size") help = "Requests per committed batch.";
    if (f.base == "commit_us") help = "Duration of the batches' COMMIT.";
    if (f.base == "queue_wait_us") help = "Time requests waited before the writer took them.";
    out += "# HELP pasyn_" + f.name + " " + help + "\n";
    out += "# TYPE pasyn_" + f.name + " histogram\n" + f.lines;
  }
  std::cout << "# HELP pasyn_info The daemon's version, database, socket and settings.\n"
            << "# TYPE pasyn_info gauge\n"
            << "pasyn_info{" << info << "} 1\n"
            << out;
}

// ---- Commands ----------------------------------------------------------------------------------

// An integer or a real when the whole text is one, NULL for the word NULL, text otherwise.
pasyn::Value guess(const std::string& p) {
  std::int64_t i = 0;
  if (auto [end, ec] = std::from_chars(p.data(), p.data() + p.size(), i);
      ec == std::errc() && end == p.data() + p.size() && !p.empty()) {
    return i;
  }
  double d = 0;
  if (auto [end, ec] = std::from_chars(p.data(), p.data() + p.size(), d);
      ec == std::errc() && end == p.data() + p.size() && !p.empty()) {
    return d;
  }
  if (p == "NULL") return nullptr;
  return p;
}

// --typed-params: TYPE:VALUE with TYPE one of int, real, text, blob (hex digits) or null.
pasyn::Value typed(const std::string& p) {
  const auto colon = p.find(':');
  const std::string type = p.substr(0, colon);
  const std::string value = colon == std::string::npos ? "" : p.substr(colon + 1);
  const auto bad = [&](const std::string& why) {
    return UsageError("parameter '" + p + "': " + why);
  };
  if (colon == std::string::npos && type != "null") {
    throw bad("give TYPE:VALUE (int, real, text, blob or null)");
  }
  if (type == "text") return value;
  if (type == "null") {
    if (!value.empty()) throw bad("null takes no value");
    return nullptr;
  }
  if (type == "int") {
    std::int64_t i = 0;
    auto [end, ec] = std::from_chars(value.data(), value.data() + value.size(), i);
    if (ec != std::errc() || end != value.data() + value.size() || value.empty()) {
      throw bad("not a 64-bit integer");
    }
    return i;
  }
  if (type == "real") {
    double d = 0;
    auto [end, ec] = std::from_chars(value.data(), value.data() + value.size(), d);
    if (ec != std::errc() || end != value.data() + value.size() || value.empty()) {
      throw bad("not a real number");
    }
    return d;
  }
  if (type == "blob") {
    if (value.size() % 2) throw bad("a blob is an even number of hex digits");
    pasyn::Blob blob;
    for (std::size_t k = 0; k < value.size(); k += 2) {
      std::uint8_t byte = 0;
      auto [end, ec] = std::from_chars(value.data() + k, value.data() + k + 2, byte, 16);
      if (ec != std::errc() || end != value.data() + k + 2) throw bad("not hex digits");
      blob.push_back(byte);
    }
    return blob;
  }
  throw bad("unknown type '" + type + "' (int, real, text, blob or null)");
}

// Parameters from the command line: guessed from their text (see guess), all text with
// --text-params, or typed explicitly with --typed-params.
pasyn::Params parse_params(const Options& o) {
  pasyn::Params params;
  for (const auto& p : o.params) {
    if (o.typed_params) {
      params.push_back(typed(p));
    } else if (o.text_params) {
      params.emplace_back(p);
    } else {
      params.push_back(guess(p));
    }
  }
  return params;
}

std::string socket_of(const Options& o) {
  if (o.socket.empty() && o.instance.empty()) {
    throw UsageError("give --socket PATH or --instance NAME");
  }
  if (!o.socket.empty()) return o.socket;
  return "/run/pasyn/" + o.instance + ".sock";
}

pasyn::MultiplexedClient connect(const Options& o) {
  pasyn::ClientOptions options;
  options.connect_timeout = std::chrono::milliseconds(o.timeout_ms);
  options.request_timeout = std::chrono::milliseconds(o.timeout_ms);
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
              << ",\"ms\":" << json_real(ms) << "}\n";
  } else {
    std::printf("pong from %s in %.2f ms\n", client.socket_path().c_str(), ms);
  }
  return 0;
}

int exec(const Options& o) {
  auto client = connect(o);
  const auto params = parse_params(o);
  const auto sent = std::chrono::steady_clock::now();
  try {
    if (o.script) {
      client.executescript(o.sql);
      print_report({{"ok", std::int64_t{1}}}, o.json);
      return 0;
    }
    const std::int64_t changes = client.execute(o.sql, params);
    print_report({{"changes", changes}}, o.json);
    return 0;
  } catch (const pasyn::ConnectionLostError& e) {
    throw OutcomeUnknown(e.what());  // the daemon runs what it read
  } catch (const pasyn::TimeoutError& e) {
    // Our own deadline (--timeout) passed: the request may still run. A TIMEOUT the daemon
    // answered before it (--lock-wait) says the request was not executed: a failure.
    if (std::chrono::steady_clock::now() - sent >= std::chrono::milliseconds(o.timeout_ms)) {
      throw OutcomeUnknown(e.what());
    }
    throw;
  }
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

const char* kind_name(pasyn::ChangeKind k) {
  switch (k) {
    case pasyn::ChangeKind::insert:
      return "insert";
    case pasyn::ChangeKind::update:
      return "update";
    case pasyn::ChangeKind::remove:
      return "delete";
    case pasyn::ChangeKind::gap:
      return "gap";
    case pasyn::ChangeKind::reset:
      break;
  }
  return "reset";
}

// Prints committed changes as they come, one line each, until --count of them (or forever).
// With --json each line has the epoch its seq belongs to: with it, --epoch and --after resume.
int watch(const Options& o) {
  auto client = connect(o);
  auto feed = o.epoch ? client.subscribe(o.tables, *o.epoch, *o.after)
                      : client.subscribe(o.tables, o.after);
  for (std::uint64_t seen = 0; !o.count || seen < *o.count;) {
    const auto c = feed.next(std::chrono::seconds(1));
    if (!c) continue;
    ++seen;
    if (o.json) {
      std::cout << "{\"seq\":" << c->commit_seq << ",\"kind\":\"" << kind_name(c->kind) << "\"";
      if (!c->table.empty()) {
        std::cout << ",\"table\":" << json_string(c->table) << ",\"rowid\":" << c->rowid;
      }
      // A string: epochs use all 64 bits, beyond the integers a double (jq 1.6, JavaScript)
      // holds exactly.
      std::cout << ",\"epoch\":\"" << feed.epoch() << "\"}" << std::endl;
    } else if (c->table.empty()) {
      std::cout << c->commit_seq << " " << kind_name(c->kind) << std::endl;
    } else {
      // Escaped as query's fields are: a name with a newline cannot forge a line (probe23).
      std::cout << c->commit_seq << " " << kind_name(c->kind) << " " << tsv_field(c->table) << " "
                << c->rowid << std::endl;
    }
  }
  return 0;
}

int run(CLI::App& app, const Options& o) {
  if (app.got_subcommand("ping")) return ping(o);
  if (app.got_subcommand("stats")) {
    const auto stats = connect(o).stats();
    if (o.prometheus) {
      print_prometheus(stats);
    } else {
      print_report(stats, o.json);
    }
    return 0;
  }
  if (app.got_subcommand("exec")) return exec(o);
  if (app.got_subcommand("watch")) return watch(o);
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
  // The options of `pasyn` itself are also accepted after the subcommand, as with git or
  // systemctl: `pasyn stats --socket S --json`.
  app.fallthrough();
  auto* socket = app.add_option("--socket", o.socket, "the daemon's Unix socket");
  app.add_option("--instance", o.instance, "the service instance NAME (/run/pasyn/NAME.sock)")
      ->type_name("NAME")
      ->excludes(socket);
  app.add_flag("--json", o.json, "print JSON instead of text");
  app.add_option("--timeout", o.timeout_ms,
                 "milliseconds to connect and handshake, and again for each request")
      ->check(CLI::Range(std::int64_t{1}, kMaxTimeoutMs))
      ->capture_default_str();
  app.require_subcommand(1);

  app.add_subcommand("ping", "check that the daemon answers");
  auto* stats_cmd = app.add_subcommand(
      "stats", "live figures: requests, batches, commit latency, queue, connections, WAL");
  stats_cmd
      ->add_flag("--prometheus", o.prometheus,
                 "print the figures in Prometheus' text exposition format")
      ->excludes(app.get_option("--json"));
  const auto add_param_flags = [&](CLI::App* cmd) {
    auto* text = cmd->add_flag("--text-params,--text", o.text_params,
                               "bind every parameter as text (\"007\" stays \"007\")");
    cmd->add_flag("--typed-params", o.typed_params,
                  "every parameter is TYPE:VALUE, TYPE one of int, real, text, blob (hex), null")
        ->excludes(text);
  };
  auto* exec_cmd = app.add_subcommand("exec", "run one write statement through the daemon");
  exec_cmd->add_option("sql", o.sql, "the SQL statement")->required();
  auto* exec_params = exec_cmd->add_option(
      "params", o.params, "parameters for ?: integers and reals as such, NULL as NULL, else text");
  exec_cmd->add_flag("--script", o.script, "several statements, run atomically, no parameters")
      ->excludes(exec_params);
  add_param_flags(exec_cmd);
  auto* query_cmd =
      app.add_subcommand("query", "run a read-only query directly on the database file");
  query_cmd->add_option("sql", o.sql, "the SELECT statement")->required();
  query_cmd->add_option("params", o.params, "parameters, as for exec");
  add_param_flags(query_cmd);
  query_cmd->add_option("--database", o.database,
                        "the database file (default: the one the daemon reports); with it, "
                        "no daemon is needed");
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
  auto* watch_cmd = app.add_subcommand(
      "watch", "print committed changes as they commit: SEQ KIND TABLE ROWID, one a line");
  watch_cmd->add_option("tables", o.tables, "only these tables (default: all)");
  auto* after = watch_cmd
                    ->add_option("--after", o.after,
                                 "resume after this commit of the daemon's current run (of "
                                 "run E with --epoch)")
                    ->type_name("SEQ");
  watch_cmd
      ->add_option("--epoch", o.epoch,
                   "resume in the daemon run E only (the \"epoch\" of a --json line, with its "
                   "\"seq\" as --after; or feed_epoch and feed_last_seq of `pasyn stats`): after "
                   "a restart, a reset comes first")
      ->type_name("E")
      ->needs(after);
  watch_cmd
      ->add_option(
          "--count", o.count,
          "exit after this many lines, changes and gap/reset markers alike (default: never)")
      ->check(CLI::Range(std::int64_t{1}, std::numeric_limits<std::int64_t>::max()));

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    const int status = app.exit(e) == 0 ? 0 : 2;  // --help and --version exit 0; bad usage 2
    // --json promises one JSON object on stdout also for what the parser refused (o.json may
    // not be set yet: the parse stopped).
    if (status != 0 && std::any_of(argv + 1, argv + argc,
                                   [](const char* a) { return std::string_view(a) == "--json"; })) {
      std::cout << "{\"ok\":false,\"error\":" << json_string(e.what()) << "}\n";
    }
    return status;
  }
  // Every failure ends here, reported once on stderr (and as JSON with --json), never as an
  // uncaught exception.
  const auto fail = [&](const char* what, int status) {
    if (o.json) {
      std::cout << "{\"ok\":false,"
                << (status == kExitOutcomeUnknown ? "\"outcome\":\"unknown\"," : "")
                << "\"error\":" << json_string(what) << "}\n";
    }
    std::fprintf(stderr, "pasyn: %s\n", what);
    return status;
  };
  try {
    return run(app, o);
  } catch (const UsageError& e) {
    return fail(e.what(), 2);
  } catch (const OutcomeUnknown& e) {
    return fail(e.what(), kExitOutcomeUnknown);
  } catch (const std::exception& e) {
    return fail(e.what(), 1);
  } catch (...) {
    return fail("unknown error", 1);
  }
}
