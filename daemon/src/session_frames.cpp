// One client connection's frames: the handshake, each request's decoding, and what the
// session refuses itself (roles, limits, protocol errors) before the writer sees it. See
// session.hpp; session.cpp holds the connection's reading, writing and closing.
#include <cstdio>

#include "access_control.hpp"
#include "admission.hpp"
#include "log.hpp"
#include "session.hpp"
#include "statement_kind.hpp"

namespace pasyn::server {
namespace {

// The most tables a SUBSCRIBE may name (PROTOCOL.md §8; see Session::subscribe).
constexpr std::uint32_t kMaxFeedTables = 1024;

}  // namespace

bool Session::handle_frame(const proto::FrameView& f, std::vector<Request>& out) {
  using proto::MsgType;
  std::string why;
  const auto type = static_cast<MsgType>(f.type);
  if (!hello_done_) {
    proto::Hello hello;
    if (type != MsgType::kHello) {
      return protocol_error("the first frame must be HELLO, got type " + hex(f.type));
    }
    if (!proto::decode_hello(f.payload, hello, why)) return protocol_error("bad HELLO: " + why);
    if (hello.magic != proto::kMagic) return protocol_error("bad magic in HELLO");
    if (hello.version != proto::kVersion) {
      return protocol_error("unsupported protocol version " + std::to_string(hello.version) +
                            " (this server speaks " + std::to_string(proto::kVersion) + ")");
    }
    hello_done_ = true;
    decoder_.set_max_frame(server_.config_.max_frame);
    handshake_timer_.cancel();
    std::vector<std::uint8_t> reply;
    // The daemon announces every capability it supports (PROTOCOL.md §3), whatever the
    // client asked for.
    proto::encode_hello_ok(reply, {proto::kVersion, proto::kServerCapabilities,
                                   server_.config_.max_frame, "pasyn-writerd " PASYN_VERSION});
    send(reply);
    return true;
  }
  if (type == MsgType::kSubscribe) return subscribe(f, !out.empty());
  if (subscribed_ && type != MsgType::kPing) {
    std::vector<std::uint8_t> reply;
    proto::encode_pasyn_error(reply, f.request_id, proto::PasynCode::kMisuse,
                              "this connection is a change feed: it may only send PING");
    send(reply);
    return true;
  }
  Request r;
  r.type = static_cast<MsgType>(proto::base_type(f.type));
  r.in_tx = proto::in_transaction(f.type);
  r.id = f.request_id;
  r.uid = static_cast<std::uint32_t>(cred_.uid);
  bool ok = false;
  // The execute family keeps the payload (a copy, or for a large frame the buffer it arrived
  // in) and reads SQL and values in place; an idempotency key comes first (PROTOCOL.md §6.3).
  std::span<const std::uint8_t> body;
  if (r.type >= MsgType::kExecute && r.type <= MsgType::kExecuteScript) {
    std::size_t held = 0;
    if (auto frame = decoder_.take_frame_buffer(held)) {  // large: f.payload stays where it is
      r.frame = std::move(frame);
      r.frame_bytes = held;
      body = f.payload;
    } else {
      server_.copy_payload(f.payload, r.payload);
      body = r.payload;
    }
    if (proto::has_idempotency_key(f.type)) {
      proto::PayloadReader reader(body);
      if (!reader.string(r.key) || r.key.empty() || r.key.size() > proto::kMaxIdempotencyKey) {
        return protocol_error(std::string("bad idempotency key in ") + proto::to_string(r.type) +
                              " (1 to " + std::to_string(proto::kMaxIdempotencyKey) +
                              " bytes expected)");
      }
      body = body.subspan(body.size() - reader.remaining());
    }
    if (r.in_tx) {  // the transaction number comes first (PROTOCOL.md §6.2)
      proto::PayloadReader reader(body);
      if (!reader.u64(r.transaction)) {
        return protocol_error(std::string("no transaction number in ") + proto::to_string(r.type));
      }
      body = body.subspan(body.size() - reader.remaining());
    }
  }
  switch (r.type) {
    case MsgType::kPing: {
      if (!(ok = proto::decode_empty(f.payload, why))) break;
      std::vector<std::uint8_t> reply;
      proto::encode_empty(reply, MsgType::kPong, f.request_id);
      send(reply);
      return true;
    }
    case MsgType::kExecute:
    case MsgType::kExecuteRowid:
    case MsgType::kExecuteFetch: {
      proto::StatementView v;
      if ((ok = proto::decode_statement_view(body, v, why, proto::has_named_params(f.type)))) {
        r.sql = v.sql;
        r.params = v.params;
      }
      break;
    }
    case MsgType::kExecuteMany: {
      if ((ok = proto::decode_many_view(body, r.many, why, proto::has_named_params(f.type)))) {
        r.sql = r.many.sql;
      }
      break;
    }
    case MsgType::kExecuteScript: {
      proto::PayloadReader reader(body);
      ok = reader.string(r.sql) && reader.finish();
      if (!ok) why = reader.error();
      break;
    }
    case MsgType::kStats: {
      // Answered here, on the I/O thread: figures stay available while the writer is busy.
      if (!(ok = proto::decode_empty(f.payload, why))) break;
      std::vector<std::uint8_t> reply;
      auto report = server_.stats();
      if (role_ == Role::kReadOnly) {
        // Where the database and the socket live, and the daemon's pid, are for the users the
        // daemon writes for (SECURITY.md); a read-only peer gets the figures.
        std::erase_if(report, [](const auto& figure) {
          return figure.first == "database" || figure.first == "socket" || figure.first == "pid";
        });
      }
      proto::encode_report(reply, f.request_id, report);
      send(reply);
      return true;
    }
    case MsgType::kCheckpoint:
    case MsgType::kBackup: {
      server_.copy_payload(f.payload, r.payload);
      proto::PayloadReader reader(r.payload);
      ok = reader.string(r.sql) && reader.finish();
      if (!ok) why = reader.error();
      break;
    }
    case MsgType::kShutdown:
      ok = proto::decode_empty(f.payload, why);
      if (ok) log().info("connection {} asked the server to shut down", id_);
      break;
    case MsgType::kBegin:
      ok = proto::decode_empty(f.payload, why);
      break;
    case MsgType::kCommit:
    case MsgType::kRollback:
      ok = proto::decode_transaction_end(f.payload, r.transaction, why);
      break;
    case MsgType::kHello:
      return protocol_error("HELLO sent twice");
    default:
      return protocol_error("unknown message type " + hex(f.type));
  }
  if (!ok) return protocol_error(std::string("bad ") + proto::to_string(r.type) + ": " + why);
  // Judged here, off the writer thread (the writer's busiest path; ~80 instructions a request).
  const bool statement = r.type == MsgType::kExecute || r.type == MsgType::kExecuteRowid ||
                         r.type == MsgType::kExecuteFetch || r.type == MsgType::kExecuteMany ||
                         r.type == MsgType::kExecuteScript;
  r.must_run_alone = statement && must_run_alone(r.sql);
  auto refusal = refuse_by_role(r);
  if (!refusal) refusal = refuse_over_limits(r);
  if (refusal) {  // answered here; the connection goes on
    std::vector<std::uint8_t> reply;
    proto::encode_pasyn_error(reply, r.id, refusal->first, refusal->second);
    send(reply);
    return true;
  }
  r.sink = shared_from_this();
  out.push_back(std::move(r));
  return true;
}

bool Session::subscribe(const proto::FrameView& f, bool parsed_requests) {
  // A filter names at most kMaxFeedTables tables, judged from the count before any is decoded:
  // a 16 MiB frame naming 3 million held ~120 MiB per subscriber (uncounted by any budget) and
  // had the I/O thread compare each held commit with each name for seconds (probe19). Whoever
  // wants that many subscribes to every table (none named). The connection goes on.
  if (f.payload.size() >= 4) {
    const std::uint32_t count = static_cast<std::uint32_t>(f.payload[0]) |
                                static_cast<std::uint32_t>(f.payload[1]) << 8 |
                                static_cast<std::uint32_t>(f.payload[2]) << 16 |
                                static_cast<std::uint32_t>(f.payload[3]) << 24;
    // (A count the payload cannot hold, at 4 bytes a name at least, is a malformed frame: the
    // decoder below says so, a protocol error.)
    if (count > kMaxFeedTables && (f.payload.size() - 4) / 4 >= count) {
      std::vector<std::uint8_t> reply;
      proto::encode_pasyn_error(reply, f.request_id, proto::PasynCode::kLimit,
                                "SUBSCRIBE names at most " + std::to_string(kMaxFeedTables) +
                                    " tables (this one " + std::to_string(count) +
                                    "): name none to hear about every table");
      send(reply);
      return true;
    }
  }
  proto::Subscribe m;
  std::string why;
  if (!proto::decode_subscribe(f.payload, m, why)) return protocol_error("bad SUBSCRIBE: " + why);
  std::vector<std::uint8_t> reply;
  if (subscribed_) {
    proto::encode_pasyn_error(reply, f.request_id, proto::PasynCode::kMisuse,
                              "this connection is subscribed already");
    send(reply);
    return true;
  }
  // After SUBSCRIBE only PING is read: a transaction held here could not end but by the idle
  // timeout, and replies still owed would mix with the feed. Refused; the connection goes on.
  // (Every request answered, the writer's transaction owner is exact: only this connection
  // could make it this one.)
  if (parsed_requests || inflight_.load() > 0 || server_.writer_.holds_transaction(this)) {
    proto::encode_pasyn_error(
        reply, f.request_id, proto::PasynCode::kMisuse,
        server_.writer_.holds_transaction(this)
            ? "SUBSCRIBE refused: this connection holds a transaction (end it first, or "
              "subscribe on a connection of its own)"
            : "SUBSCRIBE refused: this connection has requests not answered yet (wait for "
              "their replies, or subscribe on a connection of its own)");
    send(reply);
    return true;
  }
  // Any role may subscribe: the feed changes nothing.
  if (auto error = server_.feed_.subscribe(shared_from_this(), f.request_id, m)) {
    proto::encode_pasyn_error(reply, f.request_id, proto::PasynCode::kMisuse, *error);
    send(reply);
    return true;
  }
  subscribed_ = true;
  // A replay cut at the subscriber's bound leaves it behind: the writer tells it the gap
  // (flush_due), also when no commit or request comes to wake it (review20).
  server_.writer_.nudge();
  log().info("connection {} subscribed to the change feed ({} tables)", id_, m.tables.size());
  return true;
}

std::optional<std::pair<proto::PasynCode, std::string>> Session::refuse_by_role(Request& r) const {
  using proto::MsgType;
  r.role = role_;  // the writer's authorizer and admin checks use it
  if (role_ == Role::kReadOnly) {
    if ((r.type != MsgType::kExecute && r.type != MsgType::kExecuteFetch) || r.in_tx) {
      return std::pair{proto::PasynCode::kPermission,
                       std::string("this connection may only read (--read-only-uid/gid): ") +
                           proto::to_string(r.type) + " refused"};
    }
    if (!r.key.empty()) {  // recording the key would write the database
      return std::pair{proto::PasynCode::kPermission,
                       std::string("this connection may only read (--read-only-uid/gid): an "
                                   "idempotency key is recorded in the database, refused")};
    }
  }
  if (auto refusal = refuse_admin_request(r.type, role_ == Role::kAdmin)) {
    log().debug("connection {}{}: {} refused: not an admin", id_, peer_, proto::to_string(r.type));
    return std::pair{proto::PasynCode::kPermission, std::move(*refusal)};
  }
  return std::nullopt;
}

std::optional<std::pair<proto::PasynCode, std::string>> Session::refuse_over_limits(
    const Request& r) const {
  const auto& c = server_.config_;
  if (r.sql.find('\0') != std::string_view::npos) {  // SQLite would stop reading there
    return std::pair{proto::PasynCode::kMisuse, std::string("the SQL text contains a NUL byte")};
  }
  if (r.sql.size() > c.max_sql_length) {
    return std::pair{proto::PasynCode::kTooLarge,
                     "the SQL text is " + std::to_string(r.sql.size()) +
                         " bytes, more than --max-sql-length " + std::to_string(c.max_sql_length)};
  }
  const std::uint32_t params =
      r.type == proto::MsgType::kExecuteMany ? r.many.max_params : r.params.count;
  if (params > c.max_params) {
    return std::pair{
        proto::PasynCode::kTooLarge,
        std::to_string(params) +
            (r.type == proto::MsgType::kExecuteMany ? " parameters in a row" : " parameters") +
            ", more than --max-params " + std::to_string(c.max_params)};
  }
  return std::nullopt;
}

void Session::refuse(std::vector<Request>& requests) {
  std::vector<std::uint8_t> replies;
  for (const auto& r : requests) {
    proto::encode_pasyn_error(replies, r.id, proto::PasynCode::kShuttingDown, Writer::kNotExecuted);
  }
  send(replies);
}

bool Session::protocol_error(const std::string& why) {
  if (closing_ || closed_) return false;
  if (server_.protocol_errors_.admit(Clock::now())) {
    log().warn("connection {}{}: protocol error: {}; closing it", id_, peer_, why);
  }
  std::vector<std::uint8_t> reply;
  proto::encode_pasyn_error(reply, 0, proto::PasynCode::kProtocol, why);
  send(reply);
  close_after_flush();
  return false;
}

std::string Session::hex(std::uint8_t v) {
  char buf[8];
  std::snprintf(buf, sizeof buf, "0x%02x", v);
  return buf;
}

}  // namespace pasyn::server
