// One client connection of pasyn-writerd (PROTOCOL.md §2-§5): reads and parses frames, hands
// requests to the writer, and sends replies, from the writer thread itself when it can (see the
// threading model at the top of server.cpp, and send()).
#pragma once

#include <sys/socket.h>

#include <atomic>
#include <boost/asio/local/stream_protocol.hpp>
#include <boost/asio/steady_timer.hpp>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include <pasyn/proto/codec.hpp>
#include <pasyn/proto/feed.hpp>

#include "access_control.hpp"
#include "memory_budget.hpp"
#include "server_impl.hpp"
#include "writer.hpp"

namespace pasyn::server {

/// One client connection. Lives on the I/O thread; kept alive by its pending handlers and by
/// the requests it has in the writer's queue. Thread-safety: the methods marked "any thread" or
/// "writer thread" (deliver, release_bytes, wake, unsent_bytes, alive, abandon; send through
/// deliver) may run beside the I/O thread: they touch only the atomics and, under out_mu_, the
/// output state and the descriptor. Everything else is for the I/O thread only.
class Session : public ReplySink,
                public ByteAccount,
                public FeedSink,
                public std::enable_shared_from_this<Session> {
 public:
  Session(Server::Impl& server, local::socket socket, std::uint64_t id);

  /// The peer was admitted at accept (admission.hpp).
  void start();

  // Writer thread: the replies of `replies` requests of this connection.
  void deliver(std::span<const std::uint8_t> frames, std::size_t replies) override;

  // Any thread: a queued request was dropped (ByteCharge) or replies were written.
  void release_bytes(std::size_t n) noexcept override;

  // Any thread: resumes reading (on the I/O thread) if it was paused for a limit that may now
  // have room; pump() checks again.
  void wake();

  // Reply bytes waiting to be written to this client (the write in flight included).
  std::size_t unsent_bytes();

  // Any thread: the change feed's frames (FeedHub, after SUBSCRIBE).
  void push(std::vector<std::uint8_t> frames) override { send(frames); }
  std::size_t unsent() override { return unsent_bytes(); }

  // I/O thread: disconnects this client, the largest holder of unread replies while
  // --max-total-bytes is reached (its transaction is rolled back by close_now).
  void shed(std::size_t unsent);

  void close_after_flush();

  bool alive() const noexcept override { return alive_.load(std::memory_order_acquire); }

  // Writer thread: close without answering what the writer still owes (outcome unknown).
  void abandon() noexcept override;

  void close_now();

 private:
  void describe_peer();

  // The peer's role from its credentials (access_control.hpp). Whether it may connect at all
  // was decided at accept (admission.cpp), with the same rules.
  void check_access();

  void resume_reading();

  // A limit that stops reading: unanswered requests (--max-inflight), this connection's bytes
  // (--max-queued-bytes) or everyone's (--max-total-bytes; not for the transaction's owner).
  bool reading_blocked(std::size_t parsed = 0) const;

  ByteCharge charge(std::size_t n);

  // A frame in progress after HELLO (the decoder holds `held` bytes of it, or of frames not
  // parsed yet; `parsed`: a frame was taken since the last look) must be complete within
  // --handshake-timeout of its first byte: else a protocol error closes the connection
  // (probe31: connections holding a frame of 16 MiB minus a byte were kept for ever, 1 GB for
  // 60 of them). Its bytes are not counted in the byte limits, and a connection is read until
  // it finishes the frame it began (pump_once; counted, they paused connections mid-frame, which
  // could then never release them: review20), so they are at most --max-frame a connection,
  // for at most that long (STATS partial_frame_bytes). One timer wait per timeout
  // (watch_partial_frame).
  void note_partial_frame(std::size_t held, bool parsed);
  void watch_partial_frame();

  void do_read();

  void on_read(error_code ec, std::size_t n);

  // Takes the complete frames received, up to the in-flight and byte limits, hands the
  // requests to the writer, and reads on, or pauses reading (backpressure) until replies and
  // answered requests bring this connection under --max-inflight and --max-queued-bytes, and
  // the daemon under --max-total-bytes, again; unparsed bytes wait in the decoder.
  void pump();

  // One round of pump(): true if it must run again at once.
  bool pump_once();

  // Returns false after a protocol error (the session is then closing).
  bool handle_frame(const proto::FrameView& f, std::vector<Request>& out);

  // SUBSCRIBE: the connection becomes a change feed (FeedHub), or gets the error (also while it
  // holds a transaction or has requests unanswered, `parsed_requests` those not yet submitted).
  bool subscribe(const proto::FrameView& f, bool parsed_requests);

  // What the connection's role allows: an error to answer a well-formed request with, if any.
  // Also marks the request with the role, for the writer's own checks.
  std::optional<std::pair<proto::PasynCode, std::string>> refuse_by_role(Request& r) const;

  // The size limits of a well-formed request: an error to answer it with, if any.
  std::optional<std::pair<proto::PasynCode, std::string>> refuse_over_limits(
      const Request& r) const;

  void refuse(std::vector<Request>& requests);

  bool protocol_error(const std::string& why);

  // I/O thread: after the peer's EOF, closes (once the output is flushed) when no request of it
  // is left unanswered; does nothing before, or once closing.
  void finish_sent();

  // Any thread: sends the frames now, from this thread, if no write is in flight and the
  // socket takes them; whatever remains goes to the I/O thread's single async_write, behind
  // which later frames queue up and are written together.
  void send(std::span<const std::uint8_t> frames);

  // I/O thread: writes what is pending, or ends the write phase (and a pending close).
  void do_write();

  // out_mu_ held: reply bytes now waiting in pending_ (or in the write in flight).
  void add_unsent_locked(std::size_t n);

  // out_mu_ held: reply bytes written, or dropped.
  void release_unsent_locked(std::size_t n);

  // out_mu_ held: no more output; what was waiting (the write in flight too, which the close
  // cancels) leaves the budgets.
  void drop_output_locked();

  static std::string hex(std::uint8_t v);

  Server::Impl& server_;
  local::socket socket_;
  // The handshake's deadline, then a stalled frame's (watch_partial_frame), then a closing
  // connection's flush grace (close_after_flush).
  asio::steady_timer handshake_timer_;
  proto::FrameDecoder decoder_;
  std::size_t offered_ = 0;  // bytes the read in flight may fill
  bool busy_reads_ = false;  // the last read filled what it was offered
  std::size_t partial_ = 0;  // note_partial_frame(): the bytes Server::Impl::partial_bytes_ counts
  std::chrono::steady_clock::time_point frame_deadline_{};  // of the frame in progress
  bool partial_watched_ = false;                            // watch_partial_frame() waits
  std::uint64_t id_;
  std::string peer_;
  bool logged_ = false;  // I/O thread: "opened" was logged (then so is "closed"; LogLimiter)
  std::atomic<bool> alive_{true};
  ucred cred_{};                          // the peer's pid, uid and gid (SO_PEERCRED)
  Role role_ = Role::kWriter;             // set by check_access() when the session starts
  std::atomic<std::size_t> inflight_{0};  // requests handed to the writer, not yet answered
  /// Request payloads not yet answered and unsent reply bytes (--max-queued-bytes).
  std::atomic<std::size_t> queued_bytes_{0};
  std::atomic<bool> read_paused_{false};  // backpressure: no read until reading_blocked() ends
  // I/O thread: the session itself while its reading is paused. Nothing else may hold it then (no
  // read in flight, maybe no request in the writer): without this it would be destroyed, its
  // socket closed unannounced and its connection slot never given back. Dropped on resume or
  // close.
  std::shared_ptr<Session> paused_hold_;
  std::atomic<bool> wake_posted_{false};  // a resume_reading() is posted
  bool hello_done_ = false;
  bool subscribed_ = false;  // a change feed (PROTOCOL.md §8): only PING may follow
  bool closing_ = false;     // no more reads; close once the replies are written
  // The peer shut its sending side (EOF after the handshake): nothing more to read, but every
  // request it sent is still answered; the session closes once they all are (finish_sent()).
  // Atomic: deliver() (writer thread) reads it after its own decrement of inflight_.
  std::atomic<bool> peer_done_{false};
  bool closed_ = false;
  std::vector<std::uint8_t> writing_buf_;  // I/O thread: frames of the async_write in flight

  std::mutex out_mu_;        // the output state below, and the descriptor while a send() uses it
  bool writing_ = false;     // GUARDED_BY(out_mu_): an async_write is in flight
  bool out_closed_ = false;  // GUARDED_BY(out_mu_)
  std::vector<std::uint8_t> pending_;  // GUARDED_BY(out_mu_): frames for the next write
  std::size_t unsent_ = 0;  // GUARDED_BY(out_mu_): bytes of pending_ and of the write in flight
};

}  // namespace pasyn::server
