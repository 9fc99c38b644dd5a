// Allocation counting for the integration tests: an LD_PRELOAD library that counts the C++
// allocations (operator new, every form but the aligned ones) of the real pasyn-writerd, without
// any test hook in the daemon (daemon_alloc_test.cpp).
//
// On SIGUSR2 it writes the count so far, in decimal and followed by a newline, to
// $PASYN_ALLOC_COUNT_FILE: into "<file>.tmp", then renamed, so a reader never sees half of it.
// The handler calls only async-signal-safe functions.
//
// To find what allocates, set PASYN_ALLOC_TRACE to a file (the tests pass their environment to
// the daemon): every allocation between the first and the second report, the counted stretch of
// daemon_alloc_test.cpp, appends "----" and its backtrace there (backtrace_symbols_fd: binary and
// offset; `addr2line -f -C -i -e pasyn-writerd OFFSET` names them).
//
// malloc is left alone: SQLite allocates with it, and Debian builds SQLite with
// SQLITE_OMIT_LOOKASIDE, so every statement mallocs in any program that runs it; what is
// pasyn's own is allocated with operator new.
#include <execinfo.h>
#include <fcntl.h>
#include <signal.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <new>

namespace {

std::atomic<unsigned long> g_count{0};
char g_path[4096];
char g_tmp[4096 + 8];
std::atomic<unsigned> g_reports{0};
int g_trace_fd = -1;  // PASYN_ALLOC_TRACE's file, or -1

void trace() {
  void* frames[40];
  const int n = backtrace(frames, 40);
  if (::write(g_trace_fd, "----\n", 5) == 5) backtrace_symbols_fd(frames, n, g_trace_fd);
}

void* counted(std::size_t n) {
  g_count.fetch_add(1, std::memory_order_relaxed);
  if (g_trace_fd >= 0 && g_reports.load(std::memory_order_relaxed) == 1) trace();
  return std::malloc(n == 0 ? 1 : n);
}

void report(int) {
  const int saved = errno;
  g_reports.fetch_add(1, std::memory_order_relaxed);
  char digits[32];
  char* p = digits + sizeof digits;
  *--p = '\n';
  unsigned long n = g_count.load(std::memory_order_relaxed);
  do {
    *--p = static_cast<char>('0' + n % 10);
    n /= 10;
  } while (n != 0);
  const int fd = ::open(g_tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd >= 0) {
    const auto len = static_cast<std::size_t>(digits + sizeof digits - p);
    const bool ok = ::write(fd, p, len) == static_cast<ssize_t>(len);
    ::close(fd);
    if (ok) ::rename(g_tmp, g_path);
  }
  errno = saved;
}

__attribute__((constructor)) void install() {
  const char* path = std::getenv("PASYN_ALLOC_COUNT_FILE");
  if (path == nullptr || std::strlen(path) >= sizeof g_path) return;
  std::strcpy(g_path, path);
  std::snprintf(g_tmp, sizeof g_tmp, "%s.tmp", path);
  struct sigaction sa {};
  sa.sa_handler = report;
  sa.sa_flags = SA_RESTART;
  sigemptyset(&sa.sa_mask);
  sigaction(SIGUSR2, &sa, nullptr);
  if (const char* trace_path = std::getenv("PASYN_ALLOC_TRACE")) {
    void* frame = nullptr;
    backtrace(&frame, 1);  // loads libgcc_s now, not inside a counted allocation
    g_trace_fd = ::open(trace_path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  }
}

}  // namespace

void* operator new(std::size_t n) {
  if (void* p = counted(n)) return p;
  throw std::bad_alloc();
}
void* operator new[](std::size_t n) {
  if (void* p = counted(n)) return p;
  throw std::bad_alloc();
}
void* operator new(std::size_t n, const std::nothrow_t&) noexcept { return counted(n); }
void* operator new[](std::size_t n, const std::nothrow_t&) noexcept { return counted(n); }
