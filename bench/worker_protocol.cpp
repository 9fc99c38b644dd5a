// pasyn-bench worker protocol (see worker_protocol.hpp).
#include "worker_protocol.hpp"

#include <poll.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <sstream>

namespace pasyn_bench {

void put(const char* key, double value) { std::printf("%s %.17g\n", key, value); }
void put_hist(const Histogram& h) { std::printf("hist %s\n", h.serialize().c_str()); }
void put_note(const std::string& text) {
  std::string line = text;
  std::replace(line.begin(), line.end(), '\n', ' ');
  std::printf("note %s\n", line.c_str());
}
void finish_report() {
  std::puts("done");
  std::fflush(stdout);
}

void announce_ready() {
  std::puts("ready");
  std::fflush(stdout);
}

void ready_then_wait_for_go() {
  announce_ready();
  pollfd p{0, POLLIN, 0};
  const int timeout_ms =
      static_cast<int>(std::chrono::duration_cast<std::chrono::milliseconds>(kGateTimeout).count());
  char c = 0;
  if (::poll(&p, 1, timeout_ms) <= 0 || ::read(0, &c, 1) != 1) {
    throw std::runtime_error("no go from the orchestrator");
  }
}

WorkerResult parse_worker_report(const std::string& out) {
  WorkerResult r;
  std::istringstream in(out);
  std::string line;
  while (std::getline(in, line)) {
    const auto sp = line.find(' ');
    if (sp == std::string::npos) continue;  // "ready", "done"
    const std::string key = line.substr(0, sp), value = line.substr(sp + 1);
    if (key == "hist") {
      r.hist.parse(value);
    } else if (key == "note") {
      r.notes.push_back(value);
    } else {
      r.values[key] = std::strtod(value.c_str(), nullptr);
    }
  }
  return r;
}

}  // namespace pasyn_bench
