// Round trips through the codec of proto/PROTOCOL.md (proto/src/codec.cpp): every message encoded
// and decoded back unchanged (values bit for bit), the type names and the type byte's flag bits
// (idempotency key, transaction, named parameters), and FrameWriter's framing.
#include <pasyn/proto/codec.hpp>

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <string>
#include <string_view>
#include <utility>
#include <variant>
#include <vector>

#include "codec_test_support.hpp"

namespace pasyn::proto::codec_test {
namespace {

TEST(MsgTypeName, NamesEveryTypeAndCallsOthersUnknown) {
  EXPECT_STREQ(to_string(MsgType::kHello), "HELLO");
  EXPECT_STREQ(to_string(MsgType::kPing), "PING");
  EXPECT_STREQ(to_string(MsgType::kExecute), "EXECUTE");
  EXPECT_STREQ(to_string(MsgType::kExecuteRowid), "EXECUTE_ROWID");
  EXPECT_STREQ(to_string(MsgType::kExecuteFetch), "EXECUTE_FETCH");
  EXPECT_STREQ(to_string(MsgType::kExecuteMany), "EXECUTE_MANY");
  EXPECT_STREQ(to_string(MsgType::kExecuteScript), "EXECUTE_SCRIPT");
  EXPECT_STREQ(to_string(MsgType::kShutdown), "SHUTDOWN");
  EXPECT_STREQ(to_string(MsgType::kBegin), "BEGIN");
  EXPECT_STREQ(to_string(MsgType::kCommit), "COMMIT");
  EXPECT_STREQ(to_string(MsgType::kRollback), "ROLLBACK");
  EXPECT_STREQ(to_string(MsgType::kHelloOk), "HELLO_OK");
  EXPECT_STREQ(to_string(MsgType::kPong), "PONG");
  EXPECT_STREQ(to_string(MsgType::kResult), "RESULT");
  EXPECT_STREQ(to_string(MsgType::kShutdownOk), "SHUTDOWN_OK");
  EXPECT_STREQ(to_string(MsgType::kOk), "OK");
  EXPECT_STREQ(to_string(MsgType::kError), "ERROR");
  EXPECT_STREQ(to_string(static_cast<MsgType>(0x00)), "UNKNOWN");
  EXPECT_STREQ(to_string(MsgType::kStats), "STATS");
  EXPECT_STREQ(to_string(MsgType::kCheckpoint), "CHECKPOINT");
  EXPECT_STREQ(to_string(MsgType::kBackup), "BACKUP");
  EXPECT_STREQ(to_string(MsgType::kSubscribe), "SUBSCRIBE");
  EXPECT_STREQ(to_string(MsgType::kSubscribed), "SUBSCRIBED");
  EXPECT_STREQ(to_string(MsgType::kChange), "CHANGE");
  EXPECT_STREQ(to_string(static_cast<MsgType>(0x10)), "UNKNOWN");
  EXPECT_STREQ(to_string(static_cast<MsgType>(0x80)), "UNKNOWN");
}

TEST(IdempotentBit, IsAllowedOnlyOnTheExecuteFamilyAndNotWithTheTransactionBit) {
  for (std::uint8_t t = 0x03; t <= 0x07; ++t) {
    EXPECT_TRUE(has_idempotency_key(t | kIdempotent)) << int(t);
    EXPECT_FALSE(in_transaction(t | kIdempotent)) << int(t);
    EXPECT_EQ(base_type(t | kIdempotent), t);
    const auto both = static_cast<std::uint8_t>(t | kIdempotent | kInTransaction);
    EXPECT_EQ(base_type(both), both) << "both bits make an unknown type";
    EXPECT_FALSE(has_idempotency_key(both));
    EXPECT_FALSE(in_transaction(both));
  }
  for (const std::uint8_t t : {0x01, 0x02, 0x08, 0x09, 0x0A, 0x0B, 0x0C, 0x0D, 0x0E}) {
    const auto flagged = static_cast<std::uint8_t>(t | kIdempotent);
    EXPECT_FALSE(has_idempotency_key(flagged)) << int(t);
    EXPECT_EQ(base_type(flagged), flagged);
  }
}

TEST(TransactionBit, IsAllowedOnlyOnTheExecuteFamily) {
  for (std::uint8_t t = 0x03; t <= 0x07; ++t) {
    EXPECT_TRUE(in_transaction(t | kInTransaction)) << int(t);
    EXPECT_EQ(base_type(t | kInTransaction), t);
    EXPECT_FALSE(in_transaction(t));
  }
  for (std::uint8_t t : {0x01, 0x02, 0x08, 0x09, 0x0A, 0x0B, 0x3F}) {
    const auto flagged = static_cast<std::uint8_t>(t | kInTransaction);
    EXPECT_FALSE(in_transaction(flagged)) << int(t);
    EXPECT_EQ(base_type(flagged), flagged);  // stays an unknown type
  }
}

TEST(IdempotencyKey, PrecedesTheStatementPayloadAndSetsTheKeyBit) {
  Bytes wire;
  encode_empty(wire, MsgType::kPing, 1);  // a frame before it stays untouched
  const Bytes before = wire;
  const std::size_t start = wire.size();
  encode_statement(wire, MsgType::kExecute, 5, "SELECT ?", {std::string("v")});
  // Empty and overlong keys are the daemon's to refuse (hardening_test.cpp); the layout holds.
  for (const std::string& key :
       {std::string(), std::string("k"), std::string(kMaxIdempotencyKey, 'x')}) {
    Bytes keyed = wire;
    add_idempotency_key(keyed, start, key);
    EXPECT_TRUE(std::equal(before.begin(), before.end(), keyed.begin()));
    const Frame f =
        only_frame(Bytes(keyed.begin() + static_cast<std::ptrdiff_t>(start), keyed.end()));
    EXPECT_EQ(f.type, byte(MsgType::kExecute) | kIdempotent);
    EXPECT_EQ(f.request_id, 5u);
    PayloadReader r(f.payload);
    std::string_view got;
    ASSERT_TRUE(r.string(got));
    EXPECT_EQ(got, key);
    Statement m;
    std::string why;
    ASSERT_TRUE(decode_statement(
        std::span<const std::uint8_t>(f.payload).subspan(sizeof(std::uint32_t) + key.size()), m,
        why))
        << why;
    EXPECT_EQ(m.sql, "SELECT ?");
    EXPECT_EQ(keyed.size(), wire.size() + sizeof(std::uint32_t) + key.size());
  }
}

TEST(TransactionNumber, PrecedesTheStatementPayloadAndSetsTheTransactionBit) {
  Bytes plain;
  encode_statement(plain, MsgType::kExecute, 5, "SELECT ?", {std::int64_t{1}});
  Bytes wire = plain;
  add_transaction_number(wire, 0, 0x0102030405060708ull);
  const Frame f = only_frame(wire);
  EXPECT_EQ(f.type, byte(MsgType::kExecute) | kInTransaction);
  EXPECT_EQ(f.request_id, 5u);
  PayloadReader r(f.payload);
  std::uint64_t tx = 0;
  ASSERT_TRUE(r.u64(tx));
  EXPECT_EQ(tx, 0x0102030405060708ull);
  Statement m;
  std::string why;
  ASSERT_TRUE(decode_statement(
      std::span<const std::uint8_t>(f.payload).subspan(kTransactionNumberSize), m, why))
      << why;
  EXPECT_EQ(m.sql, "SELECT ?");
  EXPECT_EQ(wire.size(), plain.size() + kTransactionNumberSize);
}

TEST(TransactionNumber, IsTheWholePayloadOfCommitAndRollback) {
  for (const auto type : {MsgType::kCommit, MsgType::kRollback}) {
    Bytes wire;
    encode_transaction_end(wire, type, 9, 42);
    const Frame f = only_frame(wire);
    EXPECT_EQ(f.type, byte(type));
    std::uint64_t tx = 0;
    std::string why;
    ASSERT_TRUE(decode_transaction_end(f.payload, tx, why)) << why;
    EXPECT_EQ(tx, 42u);
    EXPECT_FALSE(decode_transaction_end({}, tx, why)) << "a version-1 (empty) COMMIT";
    EXPECT_FALSE(decode_empty(f.payload, why));
  }
}

TEST(HelloCodec, SpeaksVersion2) { EXPECT_EQ(Hello{}.version, 2); }

TEST(HelloCodec, RoundTripsTheDefaultHelloWithRequestIdZero) {
  Bytes wire;
  encode_hello(wire, Hello{});
  const Frame f = only_frame(wire);
  EXPECT_EQ(f.type, byte(MsgType::kHello));
  EXPECT_EQ(f.request_id, 0u);
  Hello m{.magic = 0, .version = 0, .capabilities = 1};
  std::string why;
  ASSERT_TRUE(decode_hello(f.payload, m, why)) << why;
  EXPECT_EQ(m.magic, kMagic);
  EXPECT_EQ(m.version, kVersion);
  EXPECT_EQ(m.capabilities, 0u);
}

TEST(HelloCodec, RoundTripsArbitraryFieldsForTheDaemonToJudge) {
  // The codec carries a wrong magic or version unchanged; refusing them is the daemon's job.
  const Hello sent{.magic = 0xDEADBEEF, .version = 0xFFFF, .capabilities = 0x8000000000000001};
  Bytes wire;
  encode_hello(wire, sent);
  Hello m;
  std::string why;
  ASSERT_TRUE(decode_hello(only_frame(wire).payload, m, why)) << why;
  EXPECT_EQ(m.magic, sent.magic);
  EXPECT_EQ(m.version, sent.version);
  EXPECT_EQ(m.capabilities, sent.capabilities);
}

TEST(HelloOkCodec, RoundTripsEveryField) {
  for (const HelloOk& sent :
       {HelloOk{.server = "pasyn-writerd 0.1.0"},
        HelloOk{.version = 1, .capabilities = ~0ull, .max_frame = kMinMaxFrame, .server = ""},
        HelloOk{.version = 2, .capabilities = 0, .max_frame = 0xFFFFFFFF, .server = "x"}}) {
    Bytes wire;
    encode_hello_ok(wire, sent);
    const Frame f = only_frame(wire);
    EXPECT_EQ(f.type, byte(MsgType::kHelloOk));
    EXPECT_EQ(f.request_id, 0u);
    HelloOk m{.server = "stale"};
    std::string why;
    ASSERT_TRUE(decode_hello_ok(f.payload, m, why)) << why;
    EXPECT_EQ(m.version, sent.version);
    EXPECT_EQ(m.capabilities, sent.capabilities);
    EXPECT_EQ(m.max_frame, sent.max_frame);
    EXPECT_EQ(m.server, sent.server);
  }
}

TEST(EmptyFrameCodec, RoundTripsEveryEmptyTypeWithItsRequestId) {
  for (MsgType type : {MsgType::kPing, MsgType::kPong, MsgType::kShutdown, MsgType::kShutdownOk}) {
    for (std::uint64_t id : {std::uint64_t{0}, std::uint64_t{1}, ~std::uint64_t{0}}) {
      SCOPED_TRACE(std::string(to_string(type)) + " id " + std::to_string(id));
      Bytes wire;
      encode_empty(wire, type, id);
      EXPECT_EQ(wire.size(), kHeaderSize);
      const Frame f = only_frame(wire);
      EXPECT_EQ(f.type, byte(type));
      EXPECT_EQ(f.request_id, id);
      EXPECT_TRUE(f.payload.empty());
      std::string why;
      EXPECT_TRUE(decode_empty(f.payload, why)) << why;
    }
  }
}

TEST(StatementCodec, RoundTripsEveryValueTypeForEachStatementRequest) {
  const Params params = every_value_type();
  for (MsgType type : {MsgType::kExecute, MsgType::kExecuteRowid, MsgType::kExecuteFetch}) {
    SCOPED_TRACE(to_string(type));
    Bytes wire;
    encode_statement(wire, type, 42, "INSERT INTO t VALUES (?)", params);
    const Frame f = only_frame(wire);
    EXPECT_EQ(f.type, byte(type));
    EXPECT_EQ(f.request_id, 42u);
    Statement m;
    std::string why;
    ASSERT_TRUE(decode_statement(f.payload, m, why)) << why;
    EXPECT_EQ(m.sql, "INSERT INTO t VALUES (?)");
    EXPECT_TRUE(identical(m.params, params));
  }
}

TEST(StatementCodec, RoundTripsInt64ExtremesAndDoublesBitForBit) {
  using I = std::numeric_limits<std::int64_t>;
  using D = std::numeric_limits<double>;
  const Params params = {
      I::min(),    I::max(),      std::int64_t{-1}, 0.0, -0.0,   D::denorm_min(), D::max(),
      D::lowest(), D::infinity(), -D::infinity(),   0.1, -1e-310};
  Bytes wire;
  encode_statement(wire, MsgType::kExecute, 1, "SELECT ?", params);
  Statement m;
  std::string why;
  ASSERT_TRUE(decode_statement(only_frame(wire).payload, m, why)) << why;
  ASSERT_TRUE(identical(m.params, params));
  EXPECT_EQ(std::get<std::int64_t>(m.params[0]), I::min());
  EXPECT_EQ(std::get<std::int64_t>(m.params[1]), I::max());
  EXPECT_TRUE(std::signbit(std::get<double>(m.params[4])));
}

TEST(StatementCodec, KeepsEmptyTextEmptyBlobAndNullDistinct) {
  const Params params = {std::string(), Blob{}, nullptr};
  Bytes wire;
  encode_statement(wire, MsgType::kExecute, 1, "SELECT ?, ?, ?", params);
  Statement m;
  std::string why;
  ASSERT_TRUE(decode_statement(only_frame(wire).payload, m, why)) << why;
  ASSERT_EQ(m.params.size(), 3u);
  EXPECT_EQ(type_of(m.params[0]), ValueType::kText);
  EXPECT_EQ(type_of(m.params[1]), ValueType::kBlob);
  EXPECT_EQ(type_of(m.params[2]), ValueType::kNull);
  EXPECT_TRUE(std::get<std::string>(m.params[0]).empty());
  EXPECT_TRUE(std::get<Blob>(m.params[1]).empty());
}

TEST(StatementCodec, RoundTripsEmptySqlWithoutParams) {
  Bytes wire;
  encode_statement(wire, MsgType::kExecuteRowid, 5, "", {});
  Statement m{.sql = "stale", .params = {std::int64_t{1}}};
  std::string why;
  ASSERT_TRUE(decode_statement(only_frame(wire).payload, m, why)) << why;
  EXPECT_EQ(m.sql, "");
  EXPECT_TRUE(m.params.empty());
}

TEST(ManyCodec, RoundTripsSeveralRowsOfDifferentShapes) {
  const std::vector<Params> rows = {
      {std::int64_t{1}, std::string("one"), Blob{1}}, {}, {nullptr}, every_value_type(),
      {std::int64_t{3}, 3.5, std::string()},
  };
  Bytes wire;
  encode_many(wire, 77, "INSERT INTO t VALUES (?, ?, ?)", rows);
  const Frame f = only_frame(wire);
  EXPECT_EQ(f.type, byte(MsgType::kExecuteMany));
  EXPECT_EQ(f.request_id, 77u);
  Many m;
  std::string why;
  ASSERT_TRUE(decode_many(f.payload, m, why)) << why;
  EXPECT_EQ(m.sql, "INSERT INTO t VALUES (?, ?, ?)");
  ASSERT_EQ(m.rows.size(), rows.size());
  for (std::size_t i = 0; i < rows.size(); ++i) {
    EXPECT_TRUE(identical(m.rows[i], rows[i])) << "row " << i;
  }
}

TEST(ManyCodec, RoundTripsZeroRows) {
  Bytes wire;
  encode_many(wire, 1, "INSERT INTO t VALUES (?)", {});
  Many m{.sql = "stale", .rows = {{nullptr}}};
  std::string why;
  ASSERT_TRUE(decode_many(only_frame(wire).payload, m, why)) << why;
  EXPECT_EQ(m.sql, "INSERT INTO t VALUES (?)");
  EXPECT_TRUE(m.rows.empty());
}

TEST(ScriptCodec, RoundTripsMultiStatementAndEmptySql) {
  for (std::string_view sql :
       {std::string_view("CREATE TABLE t(a);\nINSERT INTO t VALUES ('x;y');"),
        std::string_view()}) {
    Bytes wire;
    encode_script(wire, 12, sql);
    const Frame f = only_frame(wire);
    EXPECT_EQ(f.type, byte(MsgType::kExecuteScript));
    EXPECT_EQ(f.request_id, 12u);
    std::string got = "stale";
    std::string why;
    ASSERT_TRUE(decode_script(f.payload, got, why)) << why;
    EXPECT_EQ(got, sql);
  }
}

TEST(TextCodec, CarriesTheCheckpointModeAndTheBackupPath) {
  for (const auto type : {MsgType::kCheckpoint, MsgType::kBackup}) {
    Bytes wire;
    encode_text(wire, type, 5, "/var/lib/pasyn/copy of db.sqlite");
    const Frame f = only_frame(wire);
    EXPECT_EQ(f.type, byte(type));
    EXPECT_EQ(f.request_id, 5u);
    std::string got, why;
    ASSERT_TRUE(decode_text(f.payload, got, why)) << why;
    EXPECT_EQ(got, "/var/lib/pasyn/copy of db.sqlite");
    // Anything after the string is a malformed payload.
    Bytes longer(f.payload.begin(), f.payload.end());
    longer.push_back(0);
    EXPECT_FALSE(decode_text(longer, got, why));
  }
}

TEST(ReportCodec, IsAResultWithNameAndValueColumns) {
  const Report sent{{"requests", std::int64_t{42}},
                    {"mean_batch_size", 3.5},
                    {"database", std::string("/var/lib/pasyn/a.sqlite")},
                    {"nothing", nullptr}};
  Bytes wire;
  encode_report(wire, 8, sent);
  const Frame f = only_frame(wire);
  EXPECT_EQ(f.type, byte(MsgType::kResult));
  EXPECT_EQ(f.request_id, 8u);
  Result m;
  std::string why;
  ASSERT_TRUE(decode_result(f.payload, m, why)) << why;
  EXPECT_EQ(m.columns, (std::vector<std::string>{"name", "value"}));
  ASSERT_EQ(m.rows.size(), sent.size());
  for (std::size_t i = 0; i < sent.size(); ++i) {
    EXPECT_TRUE(identical(m.rows[i], Row{sent[i].first, sent[i].second})) << "row " << i;
  }
}

// encode_result_counts writes what encode_result writes for a RESULT without columns or rows,
// and decode_result_counts reads exactly that shape and nothing else (decode_result reads the
// rest, or rejects it).
TEST(ResultCodec, CountsAloneAreTheSameBytesAndReadInPlace) {
  Bytes fast, general;
  encode_result_counts(fast, 5, -3, std::numeric_limits<std::int64_t>::max());
  encode_result(general, 5, Result{-3, std::numeric_limits<std::int64_t>::max(), {}, {}});
  EXPECT_EQ(fast, general);
  std::int64_t changes = 0, rowid = 0;
  ASSERT_TRUE(decode_result_counts(only_frame(fast).payload, changes, rowid));
  EXPECT_EQ(changes, -3);
  EXPECT_EQ(rowid, std::numeric_limits<std::int64_t>::max());

  Bytes with_rows, truncated, longer;
  encode_result(with_rows, 6, Result{1, 2, {"a"}, {{std::int64_t{1}}}});
  EXPECT_FALSE(decode_result_counts(only_frame(with_rows).payload, changes, rowid));
  const auto payload = only_frame(fast).payload;
  truncated.assign(payload.begin(), payload.end() - 1);
  EXPECT_FALSE(decode_result_counts(truncated, changes, rowid));
  longer.assign(payload.begin(), payload.end());
  longer.push_back(0);
  EXPECT_FALSE(decode_result_counts(longer, changes, rowid));
  Bytes columns_only;  // one column, no rows: not the counts-only shape either
  encode_result(columns_only, 7, Result{1, 2, {"a"}, {}});
  EXPECT_FALSE(decode_result_counts(only_frame(columns_only).payload, changes, rowid));
}

TEST(ResultCodec, RoundTripsColumnsAndRows) {
  const Result sent{
      .changes = std::numeric_limits<std::int64_t>::max(),
      .last_rowid = std::numeric_limits<std::int64_t>::min(),
      .columns = {"id", "name", "score", "data", "nothing", ""},
      .rows = {{std::int64_t{1}, std::string("ann"), 1.5, Blob{1, 2}, nullptr, std::string()},
               {std::int64_t{2}, std::string(), -0.0, Blob{}, nullptr, Blob{0}},
               {nullptr, nullptr, nullptr, nullptr, nullptr, nullptr}},
  };
  Bytes wire;
  encode_result(wire, 99, sent);
  const Frame f = only_frame(wire);
  EXPECT_EQ(f.type, byte(MsgType::kResult));
  EXPECT_EQ(f.request_id, 99u);
  Result m;
  std::string why;
  ASSERT_TRUE(decode_result(f.payload, m, why)) << why;
  EXPECT_EQ(m.changes, sent.changes);
  EXPECT_EQ(m.last_rowid, sent.last_rowid);
  EXPECT_EQ(m.columns, sent.columns);
  ASSERT_EQ(m.rows.size(), sent.rows.size());
  for (std::size_t i = 0; i < sent.rows.size(); ++i) {
    EXPECT_TRUE(identical(m.rows[i], sent.rows[i])) << "row " << i;
  }
}

TEST(ResultCodec, RoundTripsAChangesOnlyReply) {
  Bytes wire;
  encode_result(wire, 3, Result{.changes = 5, .last_rowid = 17, .columns = {}, .rows = {}});
  Result m{.changes = 0, .last_rowid = 0, .columns = {"stale"}, .rows = {{nullptr}}};
  std::string why;
  ASSERT_TRUE(decode_result(only_frame(wire).payload, m, why)) << why;
  EXPECT_EQ(m.changes, 5);
  EXPECT_EQ(m.last_rowid, 17);
  EXPECT_TRUE(m.columns.empty());
  EXPECT_TRUE(m.rows.empty());
}

TEST(ResultCodec, RoundTripsColumnsWithoutRows) {
  Bytes wire;
  encode_result(wire, 3, Result{.changes = 0, .last_rowid = 0, .columns = {"a", "b"}, .rows = {}});
  Result m;
  std::string why;
  ASSERT_TRUE(decode_result(only_frame(wire).payload, m, why)) << why;
  EXPECT_EQ(m.columns, (std::vector<std::string>{"a", "b"}));
  EXPECT_TRUE(m.rows.empty());
}

TEST(ErrorCodec, RoundTripsSqliteDomainWithExtendedCode) {
  const ErrorReply sent{.domain = ErrorDomain::kSqlite,
                        .code = 19,
                        .extended_code = 2067,
                        .message = "UNIQUE constraint failed: t.id"};
  Bytes wire;
  encode_error(wire, 8, sent);
  const Frame f = only_frame(wire);
  EXPECT_EQ(f.type, byte(MsgType::kError));
  EXPECT_EQ(f.request_id, 8u);
  ErrorReply m;
  std::string why;
  ASSERT_TRUE(decode_error(f.payload, m, why)) << why;
  EXPECT_EQ(m.domain, ErrorDomain::kSqlite);
  EXPECT_EQ(m.code, 19);
  EXPECT_EQ(m.extended_code, 2067);
  EXPECT_EQ(m.message, sent.message);
}

TEST(ErrorCodec, RoundTripsPasynDomainAndSignedCodes) {
  const ErrorReply sent{.domain = ErrorDomain::kPasyn,
                        .code = std::numeric_limits<std::int32_t>::min(),
                        .extended_code = -1,
                        .message = ""};
  Bytes wire;
  encode_error(wire, 0, sent);
  ErrorReply m{.domain = ErrorDomain::kSqlite, .message = "stale"};
  std::string why;
  ASSERT_TRUE(decode_error(only_frame(wire).payload, m, why)) << why;
  EXPECT_EQ(m.domain, ErrorDomain::kPasyn);
  EXPECT_EQ(m.code, sent.code);
  EXPECT_EQ(m.extended_code, -1);
  EXPECT_EQ(m.message, "");
}

TEST(ErrorCodec, PasynErrorCarriesItsCodeAsBothCodes) {
  for (PasynCode code : {PasynCode::kProtocol, PasynCode::kMisuse, PasynCode::kShuttingDown,
                         PasynCode::kTimeout, PasynCode::kTooLarge}) {
    SCOPED_TRACE(static_cast<int>(code));
    Bytes wire;
    encode_pasyn_error(wire, 31, code, "because");
    const Frame f = only_frame(wire);
    EXPECT_EQ(f.type, byte(MsgType::kError));
    EXPECT_EQ(f.request_id, 31u);
    ErrorReply m;
    std::string why;
    ASSERT_TRUE(decode_error(f.payload, m, why)) << why;
    EXPECT_EQ(m.domain, ErrorDomain::kPasyn);
    EXPECT_EQ(m.code, static_cast<std::int32_t>(code));
    EXPECT_EQ(m.extended_code, static_cast<std::int32_t>(code));
    EXPECT_EQ(m.message, "because");
  }
}

TEST(FrameWriter, AppendsFramesBackToBackThatSplitInOrder) {
  Bytes wire;
  encode_hello(wire, Hello{});
  encode_empty(wire, MsgType::kPing, 1);
  encode_statement(wire, MsgType::kExecute, 2, "SELECT 1", {});
  encode_result(wire, 2, Result{.changes = 1, .last_rowid = 0, .columns = {}, .rows = {}});
  encode_pasyn_error(wire, 3, PasynCode::kTimeout, "slow");
  const auto frames = split(wire);
  ASSERT_EQ(frames.size(), 5u);
  const std::pair<MsgType, std::uint64_t> want[] = {{MsgType::kHello, 0},
                                                    {MsgType::kPing, 1},
                                                    {MsgType::kExecute, 2},
                                                    {MsgType::kResult, 2},
                                                    {MsgType::kError, 3}};
  for (std::size_t i = 0; i < frames.size(); ++i) {
    EXPECT_EQ(frames[i].type, byte(want[i].first)) << "frame " << i;
    EXPECT_EQ(frames[i].request_id, want[i].second) << "frame " << i;
  }
}

TEST(FrameWriter, PatchedCountIsWhatTheReaderSees) {
  Bytes wire;
  encode_empty(wire, MsgType::kPong, 1);  // the frame under test does not start at offset 0
  FrameWriter w(wire, MsgType::kResult, 4);
  EXPECT_EQ(w.start(), kHeaderSize);
  w.i64(1);
  w.i64(0);
  w.u32(1);
  w.string("n");
  const std::size_t row_count_at = w.position();
  w.u32(0);
  w.value(std::int64_t{10});
  w.value(std::string("eleven"));
  w.patch_u32(row_count_at, 2);
  EXPECT_EQ(w.finish(), wire.size() - kHeaderSize);

  const auto frames = split(wire);
  ASSERT_EQ(frames.size(), 2u);
  Result m;
  std::string why;
  ASSERT_TRUE(decode_result(frames[1].payload, m, why)) << why;
  ASSERT_EQ(m.rows.size(), 2u);
  EXPECT_EQ(m.rows[0], Row{std::int64_t{10}});
  EXPECT_EQ(m.rows[1], Row{std::string("eleven")});
}

TEST(FrameWriter, AbandonRemovesOnlyTheUnfinishedFrame) {
  Bytes wire;
  encode_empty(wire, MsgType::kPong, 1);
  const Bytes before = wire;
  FrameWriter w(wire, MsgType::kResult, 2);
  w.i64(1);
  w.string("a reply that turned out too large");
  w.abandon();
  EXPECT_EQ(wire, before);
}

}  // namespace
}  // namespace pasyn::proto::codec_test

namespace {

TEST(NamedParamsCodec, TypeBitCombinesWithOneModeAndNotWithScript) {
  using namespace pasyn::proto;
  EXPECT_EQ(base_type(0x13), 0x03);
  EXPECT_EQ(base_type(0x56), 0x06);
  EXPECT_EQ(base_type(0x34), 0x04);
  EXPECT_TRUE(has_named_params(0x53));
  EXPECT_TRUE(in_transaction(0x53));
  EXPECT_FALSE(has_named_params(0x43));
  EXPECT_EQ(base_type(0x17), 0x17);  // EXECUTE_SCRIPT has no parameters: unknown
  EXPECT_EQ(base_type(0x73), 0x73);  // transaction and key together: unknown
  EXPECT_EQ(base_type(0x12), 0x12);  // PING with the bit: unknown
}

TEST(NamedParamsCodec, NamedStatementRoundTripsAndRejectsTruncation) {
  using namespace pasyn::proto;
  std::vector<std::uint8_t> out;
  encode_statement_named(out, MsgType::kExecute, 5, "INSERT INTO t VALUES (:a)",
                         pasyn::NamedParams{{{"a", std::int64_t{1}}, {"b", std::string("x")}}});
  FrameDecoder d;
  d.feed(out);
  FrameView f;
  ASSERT_EQ(d.next(f), FrameDecoder::Status::kFrame);
  EXPECT_EQ(f.type, 0x13);
  StatementView v;
  std::string why;
  ASSERT_TRUE(decode_statement_view(f.payload, v, why, true)) << why;
  EXPECT_TRUE(v.params.named);
  EXPECT_EQ(v.params.count, 2u);
  PayloadReader r(v.params.bytes);
  std::string_view name;
  ValueView value;
  ASSERT_TRUE(r.string(name) && r.value_view(value));
  EXPECT_EQ(name, "a");
  EXPECT_EQ(value.integer, 1);
  // Read as a positional list, the same bytes are malformed.
  EXPECT_FALSE(decode_statement_view(f.payload, v, why, false));
  EXPECT_FALSE(decode_statement_view(f.payload.first(f.payload.size() - 1), v, why, true));
}

}  // namespace
