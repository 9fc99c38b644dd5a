// libFuzzer target pasyn-fuzz-frames: arbitrary bytes through proto::FrameDecoder and every
// decode_* function (the input layout is in input.hpp).
//
// Beyond "no crash, no leak, no out-of-bounds read" (the sanitizers' part) it checks:
//  * splitting: the stream fed in chunks of sizes derived from the input, through feed() and
//    through prepare()/commit() with small and large reads (the daemon's buffer growth and
//    shrinking), gives the same frames and the same verdict as the stream fed at once, and each
//    frame is exactly the bytes of the stream at its place;
//  * layouts: a payload that decodes re-encodes to the same bytes (the encoding is canonical),
//    and the re-encoded frame decodes to the same message; the in-place decoders
//    (decode_statement_view, decode_many_view) accept exactly what the copying ones accept and
//    see the same SQL and values.
// A broken property prints what broke and aborts, which libFuzzer reports as a crash.
#include <pasyn/proto/codec.hpp>
#include <pasyn/proto/feed.hpp>

#include <algorithm>
#include <bit>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <span>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

#include "input.hpp"

namespace {

using namespace pasyn;
using proto::FrameDecoder;
using Bytes = std::vector<std::uint8_t>;
using ByteSpan = std::span<const std::uint8_t>;

[[noreturn]] void fail(const char* what, const std::string& detail = {}) {
  std::fprintf(stderr, "pasyn-fuzz-frames: property broken: %s%s%s\n", what,
               detail.empty() ? "" : ": ", detail.c_str());
  std::abort();
}

void check(bool ok, const char* what, const std::string& detail = {}) {
  if (!ok) fail(what, detail);
}

// ---- Splitting ----------------------------------------------------------------------------------

struct Frame {
  std::uint8_t type;
  std::uint64_t request_id;
  Bytes payload;
  bool operator==(const Frame&) const = default;
};

struct Split {
  std::vector<Frame> frames;
  FrameDecoder::Status last = FrameDecoder::Status::kNeedMore;
  std::string error;
  std::size_t buffered = 0;
};

// A small deterministic generator for the chunk sizes (xorshift32).
class Chunker {
 public:
  explicit Chunker(std::uint32_t seed) : state_(seed * 2654435761u + 1) {}
  std::uint32_t next() {
    state_ ^= state_ << 13;
    state_ ^= state_ >> 17;
    state_ ^= state_ << 5;
    return state_;
  }

 private:
  std::uint32_t state_;
};

void take_frames(FrameDecoder& decoder, Split& out) {
  proto::FrameView view;
  for (;;) {
    out.last = decoder.next(view);
    if (out.last != FrameDecoder::Status::kFrame) break;
    check(proto::kHeaderSize + view.payload.size() <= decoder.max_frame(),
          "a frame over the maximum was returned");
    out.frames.push_back(
        {view.type, view.request_id, Bytes(view.payload.begin(), view.payload.end())});
  }
  if (out.last == FrameDecoder::Status::kError) {
    out.error = decoder.error();
    check(!out.error.empty(), "kError without a reason");
  }
}

// Seed 0: the whole stream in one feed(). Otherwise chunks of 1 to 32 bytes (now and then the
// whole rest), each through feed() or through prepare(n)/commit() with n the chunk, a 4 KiB
// read or a 64 KiB read, as the daemon's sessions do.
Split split(ByteSpan stream, std::uint32_t max_frame, std::uint32_t seed) {
  FrameDecoder decoder(max_frame);
  Split out;
  if (seed == 0) {
    decoder.feed(stream);
    take_frames(decoder, out);
    out.buffered = decoder.buffered();
    return out;
  }
  Chunker rng(seed);
  std::size_t pos = 0;
  while (pos < stream.size() && out.last != FrameDecoder::Status::kError) {
    const std::uint32_t r = rng.next();
    std::size_t chunk = r % 8 == 0 ? stream.size() - pos : 1 + (r >> 3) % 32;
    chunk = std::min(chunk, stream.size() - pos);
    switch ((r >> 8) % 4) {
      case 0:
        decoder.feed(stream.subspan(pos, chunk));
        break;
      default: {
        static constexpr std::size_t kReads[] = {0, 4096, 64 * 1024};
        const std::size_t want = std::max(chunk, kReads[(r >> 8) % 4 - 1]);
        const auto space = decoder.prepare(want);
        check(space.size() >= want, "prepare() gave less room than asked for");
        std::memcpy(space.data(), stream.data() + pos, chunk);
        decoder.commit(chunk);
        break;
      }
    }
    pos += chunk;
    take_frames(decoder, out);
  }
  if (stream.empty()) take_frames(decoder, out);
  out.buffered = decoder.buffered();
  return out;
}

// The frames must be the stream's bytes at their places: length, type, id, payload, back to back.
void check_against_stream(const Split& s, ByteSpan stream) {
  std::size_t pos = 0;
  for (const auto& f : s.frames) {
    check(stream.size() - pos >= proto::kHeaderSize + f.payload.size(), "frame past the stream");
    std::uint32_t length;
    std::uint64_t id;
    std::memcpy(&length, stream.data() + pos, 4);
    std::memcpy(&id, stream.data() + pos + 5, 8);
    check(length == proto::kMinLength + f.payload.size(), "frame length differs from the stream");
    check(stream[pos + 4] == f.type && id == f.request_id, "frame header differs from the stream");
    check(std::equal(f.payload.begin(), f.payload.end(), stream.begin() + pos + proto::kHeaderSize),
          "frame payload differs from the stream");
    pos += proto::kHeaderSize + f.payload.size();
  }
  if (s.last == FrameDecoder::Status::kNeedMore) {
    check(s.buffered == stream.size() - pos, "buffered() is not the unconsumed tail",
          std::to_string(s.buffered) + " vs " + std::to_string(stream.size() - pos));
  }
}

// ---- Layouts ------------------------------------------------------------------------------------

bool same_value(const Value& a, const Value& b) {
  if (a.index() != b.index()) return false;
  if (const auto* d = std::get_if<double>(&a)) {  // bitwise: NaN payloads travel unchanged
    return std::bit_cast<std::uint64_t>(*d) == std::bit_cast<std::uint64_t>(std::get<double>(b));
  }
  return a == b;
}

bool same_values(const std::vector<Value>& a, const std::vector<Value>& b) {
  return a.size() == b.size() && std::equal(a.begin(), a.end(), b.begin(), same_value);
}

bool view_equals(const proto::ValueView& v, const Value& value) {
  if (v.type != type_of(value)) return false;
  switch (v.type) {
    case ValueType::kNull:
      return true;
    case ValueType::kInteger:
      return v.integer == std::get<std::int64_t>(value);
    case ValueType::kReal:
      return std::bit_cast<std::uint64_t>(v.real) ==
             std::bit_cast<std::uint64_t>(std::get<double>(value));
    case ValueType::kText: {
      const auto& s = std::get<std::string>(value);
      return std::equal(v.bytes.begin(), v.bytes.end(), s.begin(), s.end(),
                        [](std::uint8_t x, char y) { return x == static_cast<std::uint8_t>(y); });
    }
    case ValueType::kBlob: {
      const auto& b = std::get<Blob>(value);
      return std::equal(v.bytes.begin(), v.bytes.end(), b.begin(), b.end());
    }
  }
  return false;
}

// A ParamsView walked value by value must give `params`.
void check_params_view(const proto::ParamsView& view, const Params& params) {
  check(view.count == params.size(), "ParamsView count differs");
  proto::PayloadReader r(view.bytes);
  proto::ValueView v;
  for (const auto& value : params) {
    check(r.value_view(v), "ParamsView bytes do not hold its values", r.error());
    check(view_equals(v, value), "ParamsView value differs from the decoded value");
  }
  check(r.finish(), "ParamsView bytes hold more than its values");
}

// The frame `encoded` (one whole frame) must carry `type`, `id` and exactly `payload`.
void check_reencoded(const Bytes& encoded, const Frame& f, const char* what) {
  check(encoded.size() == proto::kHeaderSize + f.payload.size(), what,
        "re-encoded size " + std::to_string(encoded.size()) + " for a payload of " +
            std::to_string(f.payload.size()));
  FrameDecoder decoder;  // the default limit: any frame of this input fits
  decoder.feed(encoded);
  proto::FrameView view;
  check(decoder.next(view) == FrameDecoder::Status::kFrame, what, "re-encoded frame not decoded");
  check(view.type == f.type && view.request_id == f.request_id, what, "header changed");
  check(std::equal(view.payload.begin(), view.payload.end(), f.payload.begin(), f.payload.end()),
        what, "re-encoded payload differs (the encoding must be canonical)");
  check(decoder.next(view) == FrameDecoder::Status::kNeedMore && decoder.buffered() == 0, what,
        "bytes after the re-encoded frame");
}

// Every decoder on the payload, whatever the frame's type: each must reject or accept cleanly.
void check_payload(const Frame& f) {
  const ByteSpan payload(f.payload);
  const auto type = static_cast<proto::MsgType>(f.type);
  std::string why;

  check(proto::to_string(type) != nullptr, "to_string returned null");
  if (proto::in_transaction(f.type)) {
    const auto base = proto::base_type(f.type);
    // The named-parameters bit (PROTOCOL.md §4.1) may come with it.
    check(base >= 0x03 && base <= 0x07 &&
              (base | proto::kInTransaction | (f.type & proto::kNamedParams)) == f.type,
          "in_transaction() on a type that may not carry the bit");
  }

  {
    proto::Hello m;
    if (proto::decode_hello(payload, m, why)) {
      Bytes out;
      proto::encode_hello(out, m);
      // encode_hello always writes request id 0 and type HELLO: compare the payload only.
      check(std::equal(out.begin() + proto::kHeaderSize, out.end(), payload.begin(), payload.end()),
            "HELLO re-encoded differs");
    }
  }
  {
    proto::HelloOk m;
    if (proto::decode_hello_ok(payload, m, why)) {
      Bytes out;
      proto::encode_hello_ok(out, m);
      check(std::equal(out.begin() + proto::kHeaderSize, out.end(), payload.begin(), payload.end()),
            "HELLO_OK re-encoded differs");
    }
  }
  {  // The change feed (PROTOCOL.md §8): what decodes re-encodes to the same bytes.
    proto::Subscribe m;
    if (proto::decode_subscribe(payload, m, why)) {
      const std::vector<std::string> tables(m.tables.begin(), m.tables.end());
      Bytes out;
      proto::encode_subscribe(out, f.request_id, tables, m.resume);
      check(std::equal(out.begin() + proto::kHeaderSize, out.end(), payload.begin(), payload.end()),
            "SUBSCRIBE re-encoded differs");
    }
    proto::Subscribed s;
    if (proto::decode_subscribed(payload, s, why)) {
      Bytes out;
      proto::encode_subscribed(out, f.request_id, s);
      check(std::equal(out.begin() + proto::kHeaderSize, out.end(), payload.begin(), payload.end()),
            "SUBSCRIBED re-encoded differs");
    }
    proto::FeedFrame c;
    if (proto::decode_change(payload, c, why)) {
      Bytes out;
      if (c.event == proto::FeedEvent::kGap) {
        check(c.changes.empty(), "a gap with changes");
        proto::encode_gap(out, f.request_id, c.seq);
      } else {
        proto::FrameWriter w(out, proto::MsgType::kChange, f.request_id);
        w.u8(static_cast<std::uint8_t>(c.event));
        w.u64(c.seq);
        w.u32(static_cast<std::uint32_t>(c.changes.size()));
        for (const auto& e : c.changes) {
          w.string(e.table);
          w.u8(static_cast<std::uint8_t>(e.op));
          w.i64(e.rowid);
        }
        w.finish();
      }
      check(std::equal(out.begin() + proto::kHeaderSize, out.end(), payload.begin(), payload.end()),
            "CHANGE re-encoded differs");
    }
  }
  check(proto::decode_empty(payload, why) == payload.empty(), "decode_empty disagrees with size");
  {
    std::uint64_t tx = 0;
    const bool ok = proto::decode_transaction_end(payload, tx, why);
    check(ok == (payload.size() == proto::kTransactionNumberSize),
          "decode_transaction_end disagrees with size");
    if (ok) {
      Bytes out;
      proto::encode_transaction_end(out, type, f.request_id, tx);
      check_reencoded(out, f, "COMMIT/ROLLBACK");
    }
  }

  {
    proto::Statement m;
    proto::StatementView v;
    std::string why_view;
    const bool ok = proto::decode_statement(payload, m, why);
    check(ok == proto::decode_statement_view(payload, v, why_view),
          "decode_statement and decode_statement_view disagree", why + " / " + why_view);
    if (ok) {
      check(v.sql == m.sql, "StatementView sql differs");
      check_params_view(v.params, m.params);
      Bytes out;
      proto::encode_statement(out, type, f.request_id, m.sql, m.params);
      check_reencoded(out, f, "statement");
      proto::Statement again;
      check(proto::decode_statement(ByteSpan(out).subspan(proto::kHeaderSize), again, why),
            "re-encoded statement does not decode", why);
      check(again.sql == m.sql && same_values(again.params, m.params),
            "re-encoded statement decodes to another statement");
    }
  }
  {
    proto::Many m;
    proto::ManyView v;
    std::string why_view;
    const bool ok = proto::decode_many(payload, m, why);
    check(ok == proto::decode_many_view(payload, v, why_view),
          "decode_many and decode_many_view disagree", why + " / " + why_view);
    if (ok) {
      check(v.sql == m.sql && v.rows == m.rows.size(), "ManyView differs");
      proto::PayloadReader r(v.bytes);
      for (const auto& row : m.rows) {
        proto::ParamsView pv;
        check(r.params_view(pv), "ManyView bytes do not hold its rows", r.error());
        check_params_view(pv, row);
      }
      check(r.finish(), "ManyView bytes hold more than its rows");
      Bytes out;
      proto::encode_many(out, f.request_id, m.sql, m.rows);
      out[4] = f.type;  // encode_many always writes EXECUTE_MANY
      check_reencoded(out, f, "EXECUTE_MANY");
    }
  }
  {
    std::string text, script;
    const bool ok = proto::decode_text(payload, text, why);
    check(ok == proto::decode_script(payload, script, why),
          "decode_text and decode_script disagree");
    if (ok) {
      check(text == script, "decode_text and decode_script differ");
      Bytes out;
      proto::encode_text(out, type, f.request_id, text);
      check_reencoded(out, f, "text");
    }
  }
  {
    proto::Result m;
    if (proto::decode_result(payload, m, why)) {
      for (const auto& row : m.rows) {
        check(row.size() == m.columns.size(), "RESULT row width differs from its columns");
      }
      Bytes out;
      proto::encode_result(out, f.request_id, m);
      out[4] = f.type;
      check_reencoded(out, f, "RESULT");
      proto::Result again;
      check(proto::decode_result(ByteSpan(out).subspan(proto::kHeaderSize), again, why),
            "re-encoded RESULT does not decode", why);
      check(again.changes == m.changes && again.last_rowid == m.last_rowid &&
                again.columns == m.columns && again.rows.size() == m.rows.size(),
            "re-encoded RESULT decodes to another result");
      for (std::size_t i = 0; i < m.rows.size(); ++i) {
        check(same_values(again.rows[i], m.rows[i]), "re-encoded RESULT row differs");
      }
    }
  }
  {
    proto::ErrorReply m;
    if (proto::decode_error(payload, m, why)) {
      Bytes out;
      proto::encode_error(out, f.request_id, m);
      out[4] = f.type;
      check_reencoded(out, f, "ERROR");
    }
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size == 0) return 0;
  const std::uint8_t flags = data[0];
  const ByteSpan stream(data + 1, size - 1);
  const std::uint32_t max_frame = fuzz::kFrameLimits[flags >> fuzz::kFrameLimitShift];

  const Split whole = split(stream, max_frame, 0);
  check_against_stream(whole, stream);
  if (const std::uint32_t seed = flags & fuzz::kChunkSeedMask; seed != 0) {
    const Split chunked = split(stream, max_frame, seed);
    check(chunked.frames == whole.frames, "chunked feeding gives other frames",
          std::to_string(chunked.frames.size()) + " vs " + std::to_string(whole.frames.size()));
    check(chunked.last == whole.last && chunked.error == whole.error,
          "chunked feeding gives another verdict", chunked.error + " / " + whole.error);
    check_against_stream(chunked, stream);
  }
  for (const auto& f : whole.frames) check_payload(f);
  return 0;
}
