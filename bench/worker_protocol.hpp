// pasyn-bench worker protocol: the text a worker process and the orchestrator exchange.
//
// The worker writes "ready" on stdout once set up, then waits for one byte on stdin ("go");
// after measuring it writes its results as lines "KEY VALUE" (a number), "hist INDEX:COUNT..."
// (a serialised Histogram), "note TEXT", and a final "done". The worker side writes to stdout
// and is used by one thread at a time; the orchestrator side parses what it collected.
#pragma once

#include <map>
#include <stdexcept>
#include <string>
#include <vector>

#include "stats.hpp"

namespace pasyn_bench {

// Worker side.
void put(const char* key, double value);
void put_hist(const Histogram& h);
void put_note(const std::string& text);
void finish_report();
// Tells the orchestrator this worker is set up ("ready").
void announce_ready();
// announce_ready(), then waits (bounded) for the "go" byte.
void ready_then_wait_for_go();

// Orchestrator side: one worker's report.
struct WorkerResult {
  std::map<std::string, double> values;
  Histogram hist;
  std::vector<std::string> notes;
  double num(const std::string& key) const {
    const auto it = values.find(key);
    if (it == values.end()) throw std::runtime_error("worker reported no '" + key + "'");
    return it->second;
  }
};

// The entry point of a worker process: argv = {self, "--worker", KIND, key=value...}; returns
// the exit status (worker_main.cpp).
int worker_main(int argc, char** argv);

// Parses everything a worker wrote on stdout.
WorkerResult parse_worker_report(const std::string& out);

}  // namespace pasyn_bench
