// pasyn-bench report (see report.hpp).
#include "report.hpp"

#include <sqlite3.h>
#include <sys/statfs.h>
#include <sys/utsname.h>

#include <cmath>
#include <cstdio>
#include <fstream>
#include <pasyn/version.hpp>
#include <thread>

#ifndef PASYN_BENCH_BUILD_TYPE
#define PASYN_BENCH_BUILD_TYPE "unknown"
#endif

namespace pasyn_bench {

std::map<std::string, std::string> machine_info(const fs::path& temp_root) {
  std::map<std::string, std::string> m;  // values are JSON
  {
    std::ifstream in("/proc/cpuinfo");
    std::string line;
    while (std::getline(in, line)) {
      if (line.rfind("model name", 0) == 0) {
        m["cpu"] = json_string(line.substr(line.find(':') + 2));
        break;
      }
    }
  }
  m["cores"] = std::to_string(std::thread::hardware_concurrency());
  {
    std::ifstream in("/proc/meminfo");
    std::string key;
    double kib = 0;
    if (in >> key >> kib) m["memory_mib"] = json_number(std::round(kib / 1024));
  }
  utsname u{};
  if (::uname(&u) == 0) {
    m["kernel"] = json_string(std::string(u.sysname) + " " + u.release + " " + u.machine);
  }
  struct statfs st {};
  std::string fs_name = "other";
  if (::statfs(temp_root.c_str(), &st) == 0) {
    switch (static_cast<unsigned long>(st.f_type)) {
      case 0xEF53:
        fs_name = "ext2/3/4";
        break;
      case 0x01021994:
        fs_name = "tmpfs";
        break;
      case 0x58465342:
        fs_name = "xfs";
        break;
      case 0x9123683E:
        fs_name = "btrfs";
        break;
      case 0x794C7630:
        fs_name = "overlayfs";
        break;
      default:
        break;
    }
  }
  m["temp_dir"] = json_string(temp_root.parent_path().string());
  m["temp_fs"] = json_string(fs_name);
  m["sqlite"] = json_string(sqlite3_libversion());
  m["compiler"] = json_string(__VERSION__);
  m["build_type"] = json_string(PASYN_BENCH_BUILD_TYPE);
  m["pasyn"] = json_string(PASYN_VERSION_STRING);
  return m;
}

void print_json(const std::vector<RowResult>& rows,
                const std::map<std::string, std::string>& machine, const Settings& s,
                const std::string& command) {
  std::string out = "{\"rows\": [";
  for (std::size_t i = 0; i < rows.size(); ++i) {
    const RowResult& r = rows[i];
    out += i ? ",\n  {" : "\n  {";
    out += "\"name\": " + json_string(r.name);
    out += ", \"ratio\": " + json_number(r.ratio);
    out += ", \"ratio_of\": " + json_string(r.ratio_of);
    out += ", \"target\": " + json_number(r.target);
    out += ", \"pasyn\": " + json_number(r.pasyn);
    out += ", \"baseline\": " + json_number(r.baseline);
    out += ", \"unit\": " + json_string(r.unit);
    out += ", \"p50_us\": " + json_number(r.p50);
    out += ", \"p99_us\": " + json_number(r.p99);
    out += ", \"pass\": " + std::string(r.pass() ? "true" : "false");
    out += ", \"baseline_p50_us\": " + json_number(r.base_p50);
    out += ", \"baseline_p99_us\": " + json_number(r.base_p99);
    for (const auto& [k, v] : r.extra) out += ", " + json_string(k) + ": " + json_number(v);
    if (!r.error.empty()) out += ", \"error\": " + json_string(r.error);
    out += ", \"note\": " + json_string(r.note) + "}";
  }
  out += "\n],\n\"machine\": {";
  bool first = true;
  for (const auto& [k, v] : machine) {
    out += (first ? "" : ", ") + json_string(k) + ": " + v;
    first = false;
  }
  out += "},\n\"settings\": {\"reps\": " + std::to_string(s.reps) +
         ", \"count_reps\": " + std::to_string(s.count_reps) +
         ", \"seconds\": " + json_number(s.seconds) +
         ", \"quick\": " + (s.quick ? "true" : "false") +
         ", \"statistic\": \"median over reps of each figure; ratio = median(pasyn) / "
         "median(baseline), or baseline / pasyn for latency\"}";
  out += ",\n\"command\": " + json_string(command) + "}\n";
  std::fputs(out.c_str(), stdout);
}

void print_table(const std::vector<RowResult>& rows,
                 const std::map<std::string, std::string>& machine, const Settings& s,
                 double wall_seconds) {
  auto unquote = [](const std::string& v) {
    return v.size() >= 2 && v.front() == '"' ? v.substr(1, v.size() - 2) : v;
  };
  const auto get = [&](const char* k) {
    const auto it = machine.find(k);
    return it == machine.end() ? std::string("?") : unquote(it->second);
  };
  std::printf("pasyn-bench %s (%s build): %s, %s cores, %s MiB RAM, %s, SQLite %s, temp on %s\n",
              get("pasyn").c_str(), get("build_type").c_str(), get("cpu").c_str(),
              get("cores").c_str(), get("memory_mib").c_str(), get("kernel").c_str(),
              get("sqlite").c_str(), get("temp_fs").c_str());
  std::string exceptions;  // the rows that run another number of repetitions (rows.hpp)
  if (s.count_reps != s.reps) {
    exceptions +=
        ", " + std::to_string(s.count_reps) + " of inflight1000, execute_many_100k and clients1000";
  }
  if (s.reps % 2 != 0) exceptions += ", " + std::to_string(s.reps + 1) + " of feed16";
  std::printf("%d repetition%s per row (median)%s, %s s per timed run%s\n\n", s.reps,
              s.reps == 1 ? "" : "s", exceptions.c_str(), plain(s.seconds).c_str(),
              s.quick ? ", --quick" : "");
  // bound: bound_ratio, the ratio the minimal program doing only the row's work reaches in the
  // same run (see add_bound); of_bound = ratio / bound.
  const auto extra = [](const RowResult& r, const char* key) {
    const auto it = r.extra.find(key);
    return it == r.extra.end() ? std::string("-") : format("%.2f", it->second);
  };
  std::printf("%-21s %11s %11s %-7s %8s %7s %-5s %6s %8s %9s %9s\n", "workload", "pasyn",
              "baseline", "unit", "ratio", "target", "pass", "bound", "of_bound", "p50_us",
              "p99_us");
  for (const RowResult& r : rows) {
    if (!r.error.empty()) {
      std::printf("%-21s ERROR: %s\n", r.name.c_str(), r.error.c_str());
      continue;
    }
    std::printf("%-21s %11s %11s %-7s %8s %7s %-5s %6s %8s %9s %9s\n", r.name.c_str(),
                figure(r.pasyn).c_str(), figure(r.baseline).c_str(), r.unit.c_str(),
                format("%.2fx", r.ratio).c_str(), plain(r.target).c_str(),
                r.pass() ? "PASS" : "FAIL", extra(r, "bound_ratio").c_str(),
                extra(r, "of_bound").c_str(), figure(r.p50).c_str(), figure(r.p99).c_str());
  }
  std::printf(
      "\nratio: higher is better (throughput pasyn/baseline; latency baseline/pasyn; "
      "RSS 64 MiB/measured); the baseline of writers16_* is this machine's ceiling, measured "
      "in the same run (see their notes); bound: the ratio of the minimal program doing only "
      "the row's work, same run (bound_ratio); of_bound = ratio / bound\n");
  for (const RowResult& r : rows) {
    if (r.note.empty() && r.ratio_of.empty()) continue;
    std::printf("- %s", r.name.c_str());
    if (!r.ratio_of.empty()) std::printf(" (ratio = %s)", r.ratio_of.c_str());
    std::printf(": %s\n", r.note.c_str());
  }
  std::printf("total time %.1f s\n", wall_seconds);
}

}  // namespace pasyn_bench
