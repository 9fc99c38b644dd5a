// pasyn-bench report: the table (default) or one JSON object (--json) of the rows, with the
// machine they ran on.
#pragma once

#include <filesystem>
#include <map>
#include <string>
#include <string_view>
#include <vector>

#include "json.hpp"
#include "rows.hpp"

namespace pasyn_bench {

using pasyn::json::json_string;
// `v` as a JSON number of 6 significant digits; null for NaN and infinities.
inline std::string json_number(double v) { return pasyn::json::json_number(v, 6); }

// CPU, cores, memory, kernel, file system of `temp_root`, SQLite, compiler, build type, pasyn
// version; values are JSON.
std::map<std::string, std::string> machine_info(const std::filesystem::path& temp_root);

void print_json(const std::vector<RowResult>& rows,
                const std::map<std::string, std::string>& machine, const Settings& s,
                const std::string& command);

void print_table(const std::vector<RowResult>& rows,
                 const std::map<std::string, std::string>& machine, const Settings& s,
                 double wall_seconds);

}  // namespace pasyn_bench
