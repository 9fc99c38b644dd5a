// The I/O-free codec of proto/PROTOCOL.md: feed bytes, take frames; encode and decode messages.
//
// Shared by pasyn-writerd and libpasyn-client as a private static library. Nothing here reads or
// writes a socket, allocates on the strength of an unchecked length, or throws on bad input:
// decoders report failure with a status and a reason.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <pasyn/value.hpp>

namespace pasyn::proto {

inline constexpr std::uint32_t kMagic = 0x4E595350;  // "PSYN" read as a little-endian u32
inline constexpr std::uint16_t kVersion = 2;

/// Capability bits of HELLO and HELLO_OK (PROTOCOL.md §3): a client sets the optional features
/// it wants, the daemon answers with every feature it supports, and a feature is in effect on a
/// connection when both set its bit. A new feature takes the next free bit and is listed here
/// and in PROTOCOL.md; unknown bits are ignored by both sides.
/// Bit 0: named parameters (the kNamedParams type bit, PROTOCOL.md §4.1).
inline constexpr std::uint64_t kCapNamedParams = 1u << 0;
/// The change feed: SUBSCRIBE, SUBSCRIBED, CHANGE (PROTOCOL.md §8; proto/feed.hpp).
inline constexpr std::uint64_t kCapChangeFeed = 1u << 1;
inline constexpr std::uint64_t kServerCapabilities = kCapNamedParams | kCapChangeFeed;
inline constexpr std::uint32_t kDefaultMaxFrame = 16u << 20;
/// Largest frame (header included) the daemon reads before it has sent HELLO_OK: a HELLO is
/// 27 bytes; the rest is room for fields a later version may add. PROTOCOL.md §2.
inline constexpr std::uint32_t kMaxHandshakeFrame = 256;
inline constexpr std::size_t kLengthFieldSize = 4;
inline constexpr std::size_t kHeaderSize = 13;     // u32 length + u8 type + u64 request id
inline constexpr std::uint32_t kMinLength = 9;     // type + request id
inline constexpr std::uint32_t kMinMaxFrame = 64;  // smallest --max-frame that makes sense

enum class MsgType : std::uint8_t {
  kHello = 0x01,
  kPing = 0x02,
  kExecute = 0x03,
  kExecuteRowid = 0x04,
  kExecuteFetch = 0x05,
  kExecuteMany = 0x06,
  kExecuteScript = 0x07,
  kShutdown = 0x08,
  kBegin = 0x09,
  kCommit = 0x0A,
  kRollback = 0x0B,
  kStats = 0x0C,
  kCheckpoint = 0x0D,
  kBackup = 0x0E,
  kSubscribe = 0x0F,
  kHelloOk = 0x81,
  kPong = 0x82,
  kResult = 0x83,
  kShutdownOk = 0x84,
  kOk = 0x85,
  kSubscribed = 0x86,
  kChange = 0x87,
  kError = 0xFF,
};

/// Set on EXECUTE, EXECUTE_ROWID, EXECUTE_FETCH, EXECUTE_MANY and EXECUTE_SCRIPT: run the
/// request inside the transaction this connection opened with BEGIN (PROTOCOL.md §6).
inline constexpr std::uint8_t kInTransaction = 0x40;
/// Set on the same five types outside a transaction (not together with kInTransaction): the
/// payload starts with a string, the request's idempotency key (PROTOCOL.md §6.3), followed by
/// the type's usual payload.
inline constexpr std::uint8_t kIdempotent = 0x20;
inline constexpr std::size_t kMaxIdempotencyKey = 256;
/// A transaction request (kInTransaction set) starts its payload with the u64 transaction
/// number: the request id of the BEGIN that opened it (PROTOCOL.md §6.2). COMMIT and ROLLBACK
/// carry it as their whole payload.
inline constexpr std::size_t kTransactionNumberSize = 8;

/// Set on EXECUTE, EXECUTE_ROWID, EXECUTE_FETCH and EXECUTE_MANY, alone or together with one of
/// kInTransaction and kIdempotent: every parameter list of the payload is a named list (u32
/// count, count x (string name, value)), bound by name (PROTOCOL.md §4.1).
/// Capability: named parameters.
inline constexpr std::uint8_t kNamedParams = 0x10;

/// The type byte without kInTransaction, kIdempotent and kNamedParams, when they are allowed on
/// the type in that combination; else the type unchanged (an unknown type).
inline constexpr std::uint8_t base_type(std::uint8_t type) noexcept {
  const std::uint8_t mode = type & (kInTransaction | kIdempotent);
  const bool named = (type & kNamedParams) != 0;
  const std::uint8_t base = type & ~(kInTransaction | kIdempotent | kNamedParams);
  if (base < 0x03 || base > 0x07) return type;
  if (mode == (kInTransaction | kIdempotent)) return type;
  if (named && base == 0x07) return type;  // EXECUTE_SCRIPT has no parameters
  return base;
}
inline constexpr bool in_transaction(std::uint8_t type) noexcept {
  return base_type(type) != type && (type & kInTransaction);
}
inline constexpr bool has_idempotency_key(std::uint8_t type) noexcept {
  return base_type(type) != type && (type & kIdempotent);
}
inline constexpr bool has_named_params(std::uint8_t type) noexcept {
  return base_type(type) != type && (type & kNamedParams);
}

/// Name of a message type for logs ("EXECUTE"), or "UNKNOWN".
const char* to_string(MsgType type) noexcept;

enum class ErrorDomain : std::uint8_t { kSqlite = 0, kPasyn = 1 };

/// Error codes of the pasyn domain (PROTOCOL.md §5).
enum class PasynCode : std::int32_t {
  kProtocol = 1,
  kMisuse = 2,
  kShuttingDown = 3,
  kTimeout = 4,
  kTooLarge = 5,
  kTransactionEnded = 6,
  kLimit = 7,
  kPermission = 8,
};

/// The extended code of a MISUSE that is a transaction command out of place (`BEGIN`/`COMMIT`
/// sent as SQL, a `SAVEPOINT` outside a transaction): MISUSE | 1 << 8. Every other pasyn error
/// carries its code again as its extended code (PROTOCOL.md §5, ERROR).
inline constexpr std::int32_t kMisuseTransactionCommand = 2 | (1 << 8);

/// One complete frame; `payload` points into the decoder's buffer and stays valid until the
/// next call of any non-const FrameDecoder method.
struct FrameView {
  std::uint8_t type = 0;
  std::uint64_t request_id = 0;
  std::span<const std::uint8_t> payload;
};

/// Splits a byte stream into frames, checking each length against the maximum before the body
/// is buffered. Once it reports an error it stays in that state.
///
/// Memory follows the bytes received, never a length the peer announces: the buffer grows
/// geometrically as data arrives (up to the frame in progress), without zero-filling.
///
/// Thread-safety: none; one decoder per connection. Zero-copy use: `prepare(n)`, read into the
/// returned span, `commit(bytes_read)`, then call `next()` until it stops returning kFrame.
class FrameDecoder {
 public:
  enum class Status { kFrame, kNeedMore, kError };

  explicit FrameDecoder(std::uint32_t max_frame = kDefaultMaxFrame);

  /// Writable space of at least `n` bytes at the end of the buffer (all the free space there).
  /// When the buffer must grow it at least doubles, but never past the end of a partial frame
  /// whose header has been seen, unless `n` asks for more. A buffer grown for a large frame
  /// shrinks back once that frame has been taken.
  std::span<std::uint8_t> prepare(std::size_t n);
  /// Marks `n` bytes of the last prepare() span as received.
  void commit(std::size_t n);
  /// Copies `bytes` in (prepare + memcpy + commit).
  void feed(std::span<const std::uint8_t> bytes);
  /// When nothing is buffered, frees a buffer grown past what an idle connection keeps
  /// (prepare() does so only at the next read, which an idle client may never make: it kept
  /// the buffer of its largest reply while it lived). Invalidates the last frame's view.
  void trim() noexcept;
  /// Takes the next complete frame, if any.
  Status next(FrameView& out);
  /// Whether next() would now return something other than kNeedMore (a frame, or an error).
  bool frame_ready() const noexcept;

  /// A buffer of the decoder's: from malloc, freed with std::free.
  struct Free {
    void operator()(std::uint8_t* p) const noexcept;
  };
  using Buffer = std::unique_ptr<std::uint8_t, Free>;
  /// Right after next() returned a frame that filled a buffer grown for it (a frame larger than
  /// the buffer an idle connection keeps, alone in a buffer at most twice its size), hands that
  /// buffer over instead of letting the caller copy the frame out: the frame's view stays valid
  /// while the caller keeps the buffer, and the decoder starts afresh; `held` is set to the
  /// buffer's size. Otherwise null, and nothing changes.
  Buffer take_frame_buffer(std::size_t& held) noexcept;

  /// Why the stream was rejected, once next() returned kError.
  const std::string& error() const noexcept { return error_; }
  /// Bytes received but not yet returned as frames.
  std::size_t buffered() const noexcept { return end_ - begin_; }
  /// Bytes the decoder holds allocated (for memory accounting and tests).
  std::size_t capacity() const noexcept { return capacity_; }
  std::uint32_t max_frame() const noexcept { return max_frame_; }
  /// Changes the largest frame accepted from the next frame on (the daemon raises it from
  /// kMaxHandshakeFrame once the handshake is done).
  void set_max_frame(std::uint32_t max_frame) noexcept { max_frame_ = max_frame; }

 private:
  static constexpr std::size_t kKeepBuffer = 16 * 1024;
  void reallocate(std::size_t size);

  // capacity_ bytes from malloc, not zero-filled; grown with realloc (see reallocate()).
  Buffer buf_;
  std::size_t capacity_ = 0;
  std::size_t begin_ = 0;
  std::size_t end_ = 0;
  std::size_t partial_ = 0;   // size of the frame starting at begin_ once its header is seen
  bool frame_alone_ = false;  // the frame next() just returned filled buf_ from its start
  std::uint32_t max_frame_;
  std::string error_;
};

/// Appends one frame to a byte vector: begin(), the payload fields, end().
/// Several frames may be appended to the same vector back to back (coalesced writes).
class FrameWriter {
 public:
  FrameWriter(std::vector<std::uint8_t>& out, MsgType type, std::uint64_t request_id);
  FrameWriter(const FrameWriter&) = delete;
  FrameWriter& operator=(const FrameWriter&) = delete;

  void u8(std::uint8_t v);
  void u16(std::uint16_t v);
  void u32(std::uint32_t v);
  void u64(std::uint64_t v);
  void i32(std::int32_t v) { u32(static_cast<std::uint32_t>(v)); }
  void i64(std::int64_t v) { u64(static_cast<std::uint64_t>(v)); }
  void f64(double v);
  void string(std::string_view s);
  void bytes(std::span<const std::uint8_t> b);
  void value(const Value& v);
  void params(const Params& p);
  void named_params(const NamedParams& p);
  /// Overwrites a u32 written earlier at byte `offset` of the output vector (for counts that
  /// are known only at the end, such as a row count).
  void patch_u32(std::size_t offset, std::uint32_t v);
  void patch_u64(std::size_t offset, std::uint64_t v);
  /// Byte offset of this frame's first byte in the output vector.
  std::size_t start() const noexcept { return start_; }
  std::size_t position() const noexcept { return out_.size(); }

  /// Writes the length field; returns the size of the whole frame.
  std::size_t finish();
  /// Removes the frame from the output again (used when it would be too large).
  void abandon();

 private:
  std::vector<std::uint8_t>& out_;
  std::size_t start_;
};

/// A value read in place: text and blob bytes point into the payload.
struct ValueView {
  ValueType type = ValueType::kNull;
  std::int64_t integer = 0;
  double real = 0;
  std::span<const std::uint8_t> bytes;
};

/// A parameter list read in place: `count` values encoded back to back in `bytes`, already
/// validated, to be walked with PayloadReader::value_view.
struct ParamsView {
  std::uint32_t count = 0;
  std::span<const std::uint8_t> bytes;
  bool named = false;  // each value is preceded by its name (a string)
};

/// Bounds-checked reading of one payload. The first failure sticks: every later read fails, and
/// error() names the first problem.
class PayloadReader {
 public:
  explicit PayloadReader(std::span<const std::uint8_t> payload) : data_(payload) {}

  bool u8(std::uint8_t& v);
  bool u16(std::uint16_t& v);
  bool u32(std::uint32_t& v);
  bool u64(std::uint64_t& v);
  bool i32(std::int32_t& v);
  bool i64(std::int64_t& v);
  bool f64(double& v);
  /// A string that points into the payload.
  bool string(std::string_view& v);
  bool value(Value& v);
  bool params(Params& p);
  bool value_view(ValueView& v);
  /// Validates a parameter list without copying it.
  bool params_view(ParamsView& p);
  /// Validates a named parameter list (count x (string name, value)) without copying it.
  bool named_params_view(ParamsView& p);
  /// A count of items each at least `min_item_size` bytes: fails if they cannot fit in what
  /// remains, so that the caller may reserve() safely.
  bool count(std::uint32_t& n, std::size_t min_item_size);
  /// Succeeds if every byte was consumed (and nothing failed before).
  bool finish();
  /// finish(), setting `why` to error() when it fails: how each decode_* ends.
  bool finish(std::string& why);

  bool ok() const noexcept { return error_ == nullptr; }
  const char* error() const noexcept { return error_ ? error_ : ""; }
  std::size_t remaining() const noexcept { return data_.size() - pos_; }

 private:
  bool take(std::size_t n, const std::uint8_t*& p);
  bool fail(const char* why);

  std::span<const std::uint8_t> data_;
  std::size_t pos_ = 0;
  const char* error_ = nullptr;
};

// ---- Messages ---------------------------------------------------------------------------------
// encode_* append one whole frame to `out`. decode_* parse a payload and return false (with the
// reader's reason in `why`) if it does not match the layout exactly.

struct Hello {
  std::uint32_t magic = kMagic;
  std::uint16_t version = kVersion;
  std::uint64_t capabilities = 0;
};

struct HelloOk {
  std::uint16_t version = kVersion;
  std::uint64_t capabilities = 0;
  std::uint32_t max_frame = kDefaultMaxFrame;
  std::string server;
};

/// EXECUTE, EXECUTE_ROWID and EXECUTE_FETCH: one statement and its parameters.
struct Statement {
  std::string sql;
  Params params;
};

/// EXECUTE_MANY: one statement, many parameter lists.
struct Many {
  std::string sql;
  std::vector<Params> rows;
};

/// The same two messages read in place (what the daemon binds from, without copying values):
/// the views point into the payload.
struct StatementView {
  std::string_view sql;
  ParamsView params;
};
struct ManyView {
  std::string_view sql;
  std::uint32_t rows = 0;
  std::span<const std::uint8_t> bytes;  // `rows` parameter lists back to back, validated
  bool named = false;                   // they are named lists (kNamedParams)
  std::uint32_t max_params = 0;         // the most parameters any one row has
};

struct Result {
  std::int64_t changes = 0;
  std::int64_t last_rowid = 0;
  std::vector<std::string> columns;
  std::vector<Row> rows;
};

struct ErrorReply {
  ErrorDomain domain = ErrorDomain::kPasyn;
  std::int32_t code = 0;
  std::int32_t extended_code = 0;
  std::string message;
};

void encode_hello(std::vector<std::uint8_t>& out, const Hello& m);
bool decode_hello(std::span<const std::uint8_t> payload, Hello& m, std::string& why);

void encode_hello_ok(std::vector<std::uint8_t>& out, const HelloOk& m);
bool decode_hello_ok(std::span<const std::uint8_t> payload, HelloOk& m, std::string& why);

/// A frame with an empty payload (PING, PONG, SHUTDOWN, SHUTDOWN_OK, BEGIN, COMMIT, ROLLBACK, OK).
void encode_empty(std::vector<std::uint8_t>& out, MsgType type, std::uint64_t request_id);
bool decode_empty(std::span<const std::uint8_t> payload, std::string& why);

void encode_statement(std::vector<std::uint8_t>& out, MsgType type, std::uint64_t request_id,
                      std::string_view sql, const Params& params);
bool decode_statement(std::span<const std::uint8_t> payload, Statement& m, std::string& why);
/// `named`: the frame carried kNamedParams.
bool decode_statement_view(std::span<const std::uint8_t> payload, StatementView& m,
                           std::string& why, bool named = false);
/// EXECUTE, EXECUTE_ROWID, EXECUTE_FETCH with kNamedParams set on `type`.
void encode_statement_named(std::vector<std::uint8_t>& out, MsgType type, std::uint64_t request_id,
                            std::string_view sql, const NamedParams& params);

void encode_many(std::vector<std::uint8_t>& out, std::uint64_t request_id, std::string_view sql,
                 const std::vector<Params>& rows);
bool decode_many(std::span<const std::uint8_t> payload, Many& m, std::string& why);
bool decode_many_view(std::span<const std::uint8_t> payload, ManyView& m, std::string& why,
                      bool named = false);
/// EXECUTE_MANY with kNamedParams.
void encode_many_named(std::vector<std::uint8_t>& out, std::uint64_t request_id,
                       std::string_view sql, const std::vector<NamedParams>& rows);

/// A frame whose payload is one string: EXECUTE_SCRIPT (the SQL), CHECKPOINT (the mode), BACKUP
/// (the destination path).
void encode_text(std::vector<std::uint8_t>& out, MsgType type, std::uint64_t request_id,
                 std::string_view text);
bool decode_text(std::span<const std::uint8_t> payload, std::string& text, std::string& why);
void encode_script(std::vector<std::uint8_t>& out, std::uint64_t request_id, std::string_view sql);
bool decode_script(std::span<const std::uint8_t> payload, std::string& sql, std::string& why);

void encode_result(std::vector<std::uint8_t>& out, std::uint64_t request_id, const Result& m);
/// A RESULT with no columns and no rows, what EXECUTE, EXECUTE_ROWID, EXECUTE_MANY and
/// EXECUTE_SCRIPT answer: the same bytes as encode_result of {changes, last_rowid, {}, {}},
/// written at once (the writer's reply to every plain write).
void encode_result_counts(std::vector<std::uint8_t>& out, std::uint64_t request_id,
                          std::int64_t changes, std::int64_t last_rowid);
/// A report (STATS, CHECKPOINT and BACKUP replies): a RESULT with the columns "name" and "value",
/// one row per figure.
using Report = std::vector<std::pair<std::string, Value>>;
void encode_report(std::vector<std::uint8_t>& out, std::uint64_t request_id, const Report& m);
bool decode_result(std::span<const std::uint8_t> payload, Result& m, std::string& why);
/// Reads a RESULT payload that has no columns and no rows (encode_result_counts): true with
/// both counts set when the payload is exactly that. False for any other payload, which
/// decode_result then reads or rejects; nothing is decided here but the fast case.
bool decode_result_counts(std::span<const std::uint8_t> payload, std::int64_t& changes,
                          std::int64_t& last_rowid) noexcept;

void encode_error(std::vector<std::uint8_t>& out, std::uint64_t request_id, const ErrorReply& m);
bool decode_error(std::span<const std::uint8_t> payload, ErrorReply& m, std::string& why);

/// Turns the execute-family frame that starts at `frame_start` in `out` (the last frame there)
/// into its idempotent form: sets kIdempotent and puts `key` before its payload.
void add_idempotency_key(std::vector<std::uint8_t>& out, std::size_t frame_start,
                         std::string_view key);

/// Turns the execute-family frame that starts at `frame_start` in `out` (the last frame there)
/// into a transaction request: sets kInTransaction and puts the u64 `transaction` number
/// before its payload.
void add_transaction_number(std::vector<std::uint8_t>& out, std::size_t frame_start,
                            std::uint64_t transaction);

/// COMMIT and ROLLBACK: the payload is the transaction number.
void encode_transaction_end(std::vector<std::uint8_t>& out, MsgType type, std::uint64_t request_id,
                            std::uint64_t transaction);
bool decode_transaction_end(std::span<const std::uint8_t> payload, std::uint64_t& transaction,
                            std::string& why);

/// Shorthand for a pasyn-domain error frame.
void encode_pasyn_error(std::vector<std::uint8_t>& out, std::uint64_t request_id, PasynCode code,
                        std::string_view message);

}  // namespace pasyn::proto
