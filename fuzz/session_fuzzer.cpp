// libFuzzer target pasyn-fuzz-session: a whole daemon session fed arbitrary bytes.
//
// LLVMFuzzerInitialize starts one in-process server (pasyn::server::Server, the core of
// pasyn-writerd) on a temporary database and socket, running on its own thread. Each input (the
// layout is in input.hpp) is one client connection: a valid HELLO (unless the flag byte says to
// skip it, so that the handshake is fuzzed too), then the input's bytes, then shutdown(SHUT_WR);
// the replies are read until EOF or 200 ms of silence and must all be well-formed frames. Then a
// fresh connection checks that the server still serves: HELLO -> HELLO_OK, PING -> PONG (the I/O
// thread), EXECUTE "SELECT 1" -> RESULT (the writer thread, which also means every request of the
// fuzzed connection has been run, so their coverage counts for this input). A server that does
// not answer is a finding: the harness aborts.
//
// Safety: SHUTDOWN frames in the input are turned into PING frames (a stopped server is not a
// bug; see defuse()). BACKUP writes only files named by the input inside backups/ beside the
// temporary database (`VACUUM INTO` is refused); scripts/fuzz.sh still runs this target in a
// scratch directory, as an unprivileged user when it runs as root.
// The database is replaced with a fresh one when it grows past kMaxDatabaseBytes.
//
// PASYN_FUZZ_LOG=1 in the environment keeps the server's log (warnings and up) on stderr.
#include <fcntl.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
#include <csignal>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <memory>
#include <span>
#include <string>
#include <thread>
#include <vector>

#include <pasyn/proto/codec.hpp>
#include <pasyn/proto/feed.hpp>
#include <pasyn/proto/unix_socket.hpp>

#include "config.hpp"
#include "input.hpp"
#include "log.hpp"
#include "server.hpp"

namespace {

using namespace pasyn;
using Clock = std::chrono::steady_clock;
using Bytes = std::vector<std::uint8_t>;

constexpr auto kQuiet = std::chrono::milliseconds(200);  // silence that ends a fuzzed session
// How long the liveness check waits for the writer: it first runs whatever the fuzzed connection
// queued, each statement bounded by the server's statement timeout below.
constexpr auto kAliveTimeout = std::chrono::seconds(30);
constexpr std::uintmax_t kMaxDatabaseBytes = 64u << 20;

[[noreturn]] void finding(const std::string& what) {
  std::fprintf(stderr, "pasyn-fuzz-session: FINDING: %s\n", what.c_str());
  std::abort();
}

// ---- The server -----------------------------------------------------------------------------

class Fixture {
 public:
  Fixture() {
    const char* tmp = std::getenv("TMPDIR");
    std::string dir = std::string(tmp && *tmp ? tmp : "/tmp") + "/pasyn-fuzz-session-XXXXXX";
    if (!::mkdtemp(dir.data())) {
      std::perror("pasyn-fuzz-session: mkdtemp");
      std::exit(1);
    }
    dir_ = dir;
    start();
  }

  ~Fixture() {
    stop();
    std::error_code ignored;
    std::filesystem::remove_all(dir_, ignored);
  }

  const std::string& socket_path() const { return socket_; }

  // A fresh database when the fuzzer has made this one big (it creates tables and fills them).
  void limit_size() {
    std::uintmax_t bytes = 0;
    for (const char* suffix : {"", "-wal"}) {
      struct stat st {};
      if (::stat((database_ + suffix).c_str(), &st) == 0) {
        bytes += static_cast<std::uintmax_t>(st.st_size);
      }
    }
    if (bytes <= kMaxDatabaseBytes) return;
    std::fprintf(stderr, "pasyn-fuzz-session: database at %ju bytes: starting on a fresh one\n",
                 bytes);
    stop();
    start();
  }

 private:
  void start() {
    ++generation_;
    database_ = dir_ + "/fuzz-" + std::to_string(generation_) + ".sqlite";
    socket_ = dir_ + "/fuzz.sock";
    server::Config config;
    config.database_path = database_;
    config.socket_path = socket_;
    config.synchronous_full = false;  // no fsync per batch: more inputs per second
    // Short bounds, so that no input keeps the writer (and so the liveness check) waiting long.
    config.statement_timeout = std::chrono::milliseconds(50);
    config.handshake_timeout = std::chrono::milliseconds(1000);
    config.lock_wait = std::chrono::milliseconds(1000);
    config.transaction_idle_timeout = std::chrono::milliseconds(1000);
    config.drain_timeout = std::chrono::milliseconds(2000);
    try {
      server_ = std::make_unique<server::Server>(std::move(config));
    } catch (const std::exception& e) {
      std::fprintf(stderr, "pasyn-fuzz-session: cannot start the server: %s\n", e.what());
      std::exit(1);
    }
    thread_ = std::thread([s = server_.get()] { s->run(); });
  }

  void stop() {
    if (!server_) return;
    server_->request_stop();
    thread_.join();
    server_.reset();
    std::error_code ignored;
    for (const char* suffix : {"", "-wal", "-shm", "-pasyn.lock"}) {
      std::filesystem::remove(database_ + suffix, ignored);
    }
  }

  std::string dir_, database_, socket_;
  int generation_ = 0;
  std::unique_ptr<server::Server> server_;
  std::thread thread_;
};

Fixture* g_fixture = nullptr;

// ---- A client connection --------------------------------------------------------------------

class Connection {
 public:
  explicit Connection(const std::string& path) {
    fd_ = proto::connect_unix(path);
    if (fd_ < 0) finding("cannot connect to the server: " + std::string(std::strerror(errno)));
    ::fcntl(fd_, F_SETFL, ::fcntl(fd_, F_GETFL) | O_NONBLOCK);
  }
  ~Connection() { ::close(fd_); }
  Connection(const Connection&) = delete;
  Connection& operator=(const Connection&) = delete;

  // Sends `out` while taking replies in, until all is sent, the peer stops reading or closes, or
  // `deadline`. Returns false if not everything was sent.
  bool send(std::span<const std::uint8_t> out, Clock::time_point deadline) {
    std::size_t sent = 0;
    while (sent < out.size() && !eof_) {
      pollfd p{fd_, POLLIN | POLLOUT, 0};
      if (!wait(p, deadline)) return false;
      if (p.revents & (POLLIN | POLLHUP | POLLERR)) receive();
      if (p.revents & POLLOUT) {
        const ssize_t n = ::send(fd_, out.data() + sent, out.size() - sent, MSG_NOSIGNAL);
        if (n > 0) {
          sent += static_cast<std::size_t>(n);
        } else if (n < 0 && errno != EAGAIN && errno != EINTR) {
          return false;  // the server closed: fine, it may after a protocol error
        }
      }
    }
    return sent == out.size();
  }

  void shutdown_write() { ::shutdown(fd_, SHUT_WR); }

  // Reads until EOF, or until nothing came for `quiet`.
  void drain(std::chrono::milliseconds quiet) {
    while (!eof_) {
      pollfd p{fd_, POLLIN, 0};
      if (!wait(p, Clock::now() + quiet)) return;
      receive();
    }
  }

  // Reads until a frame with `id` arrives (returned in `frame`), EOF or `deadline`.
  bool await_reply(std::uint64_t id, proto::FrameView& frame, Bytes& payload,
                   Clock::time_point deadline) {
    for (;;) {
      while (!frames_.empty()) {
        auto f = std::move(frames_.front());
        frames_.erase(frames_.begin());
        if (f.request_id == id) {
          payload = std::move(f.payload);
          frame.type = f.type;
          frame.request_id = f.request_id;
          frame.payload = payload;
          return true;
        }
      }
      if (eof_) return false;
      pollfd p{fd_, POLLIN, 0};
      if (!wait(p, deadline)) return false;
      receive();
    }
  }

  // Every reply must be a frame of a type the daemon sends, with a payload of its layout.
  void check_replies(bool hello_sent) {
    if (decoder_.next(scratch_) == proto::FrameDecoder::Status::kError) {
      finding("the server sent a malformed frame: " + decoder_.error());
    }
    for (std::size_t i = 0; i < checked_.size(); ++i) {
      const auto& f = checked_[i];
      const std::span<const std::uint8_t> payload(f.payload);
      std::string why;
      bool ok = false;
      switch (static_cast<proto::MsgType>(f.type)) {
        case proto::MsgType::kHelloOk: {
          proto::HelloOk m;
          ok = proto::decode_hello_ok(payload, m, why) && i == 0 && f.request_id == 0;
          if (ok && m.version != proto::kVersion) why = "HELLO_OK with another version", ok = false;
          break;
        }
        case proto::MsgType::kPong:
        case proto::MsgType::kShutdownOk:
        case proto::MsgType::kOk:
          ok = proto::decode_empty(payload, why);
          break;
        case proto::MsgType::kResult: {
          proto::Result m;
          ok = proto::decode_result(payload, m, why);
          break;
        }
        case proto::MsgType::kError: {
          proto::ErrorReply m;
          ok = proto::decode_error(payload, m, why);
          break;
        }
        case proto::MsgType::kSubscribed: {  // the change feed (PROTOCOL.md §8)
          proto::Subscribed m;
          ok = proto::decode_subscribed(payload, m, why);
          break;
        }
        case proto::MsgType::kChange: {
          proto::FeedFrame m;
          ok = proto::decode_change(payload, m, why);
          break;
        }
        default:
          why = "a type the daemon never sends";
      }
      if (!ok) {
        finding("reply " + std::to_string(i) + " (type " + std::to_string(f.type) + ", id " +
                std::to_string(f.request_id) + ") is malformed: " + why);
      }
      // A valid HELLO is answered HELLO_OK first, or with an ERROR if the server refuses.
      if (i == 0 && hello_sent && f.type != static_cast<std::uint8_t>(proto::MsgType::kHelloOk) &&
          f.type != static_cast<std::uint8_t>(proto::MsgType::kError)) {
        finding("the first reply to a valid HELLO has type " + std::to_string(f.type));
      }
    }
  }

  void keep_frames() { keep_ = true; }

 private:
  struct Frame {
    std::uint8_t type;
    std::uint64_t request_id;
    Bytes payload;
  };

  static bool wait(pollfd& p, Clock::time_point deadline) {
    for (;;) {
      const auto left =
          std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now()).count();
      if (left <= 0) return false;
      const int n = ::poll(&p, 1, static_cast<int>(left));
      if (n > 0) return true;
      if (n == 0) return false;
      if (errno != EINTR) return false;
    }
  }

  void receive() {
    for (;;) {
      auto space = decoder_.prepare(64 * 1024);
      const ssize_t n = ::recv(fd_, space.data(), space.size(), 0);
      if (n > 0) {
        decoder_.commit(static_cast<std::size_t>(n));
        take();
        continue;
      }
      if (n == 0 || (errno != EAGAIN && errno != EINTR)) eof_ = true;  // reset counts as closed
      if (n < 0 && errno == EINTR) continue;
      return;
    }
  }

  void take() {
    proto::FrameView f;
    while (decoder_.next(f) == proto::FrameDecoder::Status::kFrame) {
      Frame copy{f.type, f.request_id, Bytes(f.payload.begin(), f.payload.end())};
      if (keep_) frames_.push_back(copy);
      checked_.push_back(std::move(copy));
    }
  }

  int fd_ = -1;
  bool eof_ = false;
  bool keep_ = false;
  proto::FrameDecoder decoder_;
  proto::FrameView scratch_;
  std::vector<Frame> frames_;   // unclaimed replies (keep_frames())
  std::vector<Frame> checked_;  // every reply, for check_replies()
};

// SHUTDOWN frames become PING frames; nothing else changes. The walk follows the frame lengths
// exactly as the server's decoder does and stops where the server would stop parsing.
void defuse(Bytes& stream) {
  std::size_t pos = 0;
  while (stream.size() - pos >= proto::kHeaderSize) {
    std::uint32_t length;
    std::memcpy(&length, stream.data() + pos, sizeof length);
    if (length < proto::kMinLength) return;
    std::uint8_t& type = stream[pos + 4];
    if (type == static_cast<std::uint8_t>(proto::MsgType::kShutdown)) {
      type = static_cast<std::uint8_t>(proto::MsgType::kPing);
    }
    if (stream.size() - pos - proto::kLengthFieldSize < length) return;
    pos += proto::kLengthFieldSize + length;
  }
}

// A fresh connection: the I/O thread and the writer thread both still answer.
void check_alive(const std::string& socket) {
  Connection c(socket);
  c.keep_frames();
  Bytes out;
  proto::encode_hello(out, {});
  proto::encode_empty(out, proto::MsgType::kPing, 1);
  proto::encode_statement(out, proto::MsgType::kExecute, 2, "SELECT 1", {});
  const auto deadline = Clock::now() + kAliveTimeout;
  if (!c.send(out, deadline)) finding("the server does not take a HELLO, PING and EXECUTE");
  proto::FrameView f;
  Bytes payload;
  if (!c.await_reply(0, f, payload, deadline) ||
      f.type != static_cast<std::uint8_t>(proto::MsgType::kHelloOk)) {
    finding("no HELLO_OK on a fresh connection");
  }
  if (!c.await_reply(1, f, payload, deadline) ||
      f.type != static_cast<std::uint8_t>(proto::MsgType::kPong)) {
    finding("no PONG on a fresh connection");
  }
  if (!c.await_reply(2, f, payload, deadline)) {
    finding("the writer did not answer EXECUTE \"SELECT 1\" within " +
            std::to_string(kAliveTimeout.count()) + " s");
  }
  if (f.type != static_cast<std::uint8_t>(proto::MsgType::kResult)) {
    proto::ErrorReply e;
    std::string why;
    proto::decode_error(f.payload, e, why);
    finding("EXECUTE \"SELECT 1\" failed: " + e.message);
  }
  c.check_replies(true);
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  std::signal(SIGPIPE, SIG_IGN);
  if (!std::getenv("PASYN_FUZZ_LOG")) server::log().set_level(spdlog::level::off);
  g_fixture = new Fixture;
  std::atexit([] {
    delete g_fixture;
    g_fixture = nullptr;
  });
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size == 0) return 0;
  const bool send_hello = !(data[0] & fuzz::kSkipHello);
  Bytes out;
  if (send_hello) proto::encode_hello(out, {});
  Bytes stream(data + 1, data + size);
  defuse(stream);
  out.insert(out.end(), stream.begin(), stream.end());
  {
    Connection c(g_fixture->socket_path());
    c.send(out, Clock::now() + kQuiet);
    c.shutdown_write();
    c.drain(kQuiet);
    c.check_replies(send_hello);
  }
  check_alive(g_fixture->socket_path());
  g_fixture->limit_size();
  return 0;
}
