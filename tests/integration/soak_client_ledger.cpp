// pasyn-test-soak-client: the process state's out-of-line members (opening the connections, the
// sorting of every error a request ends with), the final ping of every connection, and the ledger
// file (soak_client.hpp).
#include <cstdio>
#include <exception>
#include <fstream>
#include <future>
#include <memory>
#include <mutex>
#include <pasyn/pasyn.hpp>
#include <string>
#include <utility>
#include <vector>

#include "soak_client.hpp"

namespace pasyn::soak {

void Soak::open_all() {
  for (auto& slot : slots_) {
    slot.client = std::make_unique<pasyn::MultiplexedClient>(socket_, options_);
  }
}

void Soak::unexpected(const std::string& what) {
  if (counters_.unexpected++ < 20) {
    std::fprintf(stderr, "soak-client %lld: unexpected: %s\n", static_cast<long long>(proc_),
                 what.c_str());
  }
}

Outcome Soak::classify(std::exception_ptr error, Clock::duration elapsed, const std::string& what) {
  try {
    std::rethrow_exception(error);
  } catch (const pasyn::TimeoutError& e) {
    if (elapsed < kReplyBound) {
      ++counters_.lock_timeouts;
      return Outcome::kLockTimeout;
    }
    unexpected(what + ": no reply (lost?): " + e.what());
  } catch (const pasyn::OperationalError& e) {
    if (e.extended_code() == kSqliteAbortRollback) {
      ++counters_.tx_ended;
      return Outcome::kTxEnded;
    }
    unexpected(what + ": " + e.what());
  } catch (const pasyn::IntegrityError& e) {
    if (e.extended_code() == kSqliteConstraintUnique) return Outcome::kIntegrity;
    unexpected(what + ": " + e.what());
  } catch (const pasyn::Error& e) {
    unexpected(what + ": " + e.what());
  } catch (const std::exception& e) {
    unexpected(what + ": not a pasyn::Error: " + e.what());
  }
  return Outcome::kUnexpected;
}

void Soak::merge(Ledger&& l) {
  std::lock_guard lk(ledger_mu_);
  auto append = [](std::vector<Key>& to, std::vector<Key>& from) {
    to.insert(to.end(), from.begin(), from.end());
  };
  append(ledger_.acked, l.acked);
  append(ledger_.absent, l.absent);
  append(ledger_.unknown, l.unknown);
}

void ping_all(Soak& soak) {
  std::vector<std::pair<std::size_t, std::future<void>>> pongs;
  const auto sent = Clock::now();
  for (std::size_t i = 0; i < soak.slot_count(); ++i) {
    auto& client = soak.slot(i).client;
    if (!client) {
      soak.unexpected("connection " + std::to_string(i) + " is missing at the end");
      continue;
    }
    try {
      pongs.emplace_back(i, client->ping_async());
    } catch (...) {
      soak.classify(std::current_exception(), {}, "final ping " + std::to_string(i));
    }
  }
  for (auto& [i, f] : pongs) {
    soak.settle(f, sent, "final ping " + std::to_string(i));
  }
}

bool write_ledger(const Ledger& l, const char* path) {
  std::ofstream out(path, std::ios::trunc);
  auto put = [&](char tag, const std::vector<Key>& keys) {
    for (const auto& k : keys) out << tag << ' ' << k.conn << ' ' << k.seq << '\n';
  };
  put('A', l.acked);
  put('X', l.absent);
  put('U', l.unknown);
  out.flush();
  return static_cast<bool>(out);
}

}  // namespace pasyn::soak
