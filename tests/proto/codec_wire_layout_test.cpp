// The codec's output byte for byte against the layouts of proto/PROTOCOL.md: lengths, type bytes,
// little-endian integers and doubles, strings and value tags.
#include <pasyn/proto/codec.hpp>

#include <gtest/gtest.h>

#include <string_view>

#include "codec_test_support.hpp"

namespace pasyn::proto::codec_test {
namespace {

TEST(WireLayout, HelloMatchesTheSpec) {
  Bytes wire;
  encode_hello(wire, Hello{});
  const Bytes expected = {
      0x17, 0x00, 0x00, 0x00,                          // length 23 = 9 + 14, little-endian
      0x01,                                            // type HELLO
      0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,  // request id 0
      'P',  'S',  'Y',  'N',                           // magic 0x4E595350
      0x02, 0x00,                                      // version 2
      0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,  // capabilities 0
  };
  EXPECT_EQ(hex(wire), hex(expected));
  EXPECT_EQ(std::string_view(reinterpret_cast<const char*>(wire.data()) + kHeaderSize, 4), "PSYN");
}

TEST(WireLayout, HelloOkMatchesTheSpec) {
  Bytes wire;
  encode_hello_ok(wire, HelloOk{.max_frame = kDefaultMaxFrame, .server = "d1"});
  const Bytes expected = {
      0x1D, 0x00, 0x00, 0x00,                          // length 29 = 9 + 20
      0x81,                                            // type HELLO_OK
      0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,  // request id 0
      0x02, 0x00,                                      // version 2
      0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,  // capabilities 0
      0x00, 0x00, 0x00, 0x01,                          // max_frame 16 MiB
      0x02, 0x00, 0x00, 0x00, 'd',  '1',               // server "d1"
  };
  EXPECT_EQ(hex(wire), hex(expected));
}

TEST(WireLayout, CommitMatchesTheSpec) {
  Bytes wire;
  encode_transaction_end(wire, MsgType::kCommit, 3, 2);
  const Bytes expected = {
      0x11, 0x00, 0x00, 0x00,                          // length 17 = 9 + 8
      0x0A,                                            // type COMMIT
      0x03, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,  // request id 3
      0x02, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,  // transaction 2 (its BEGIN's id)
  };
  EXPECT_EQ(hex(wire), hex(expected));
}

TEST(WireLayout, ExecuteMatchesTheSpec) {
  Bytes wire;
  encode_statement(wire, MsgType::kExecute, 0x0102030405060708, "SELECT ?,?,?,?,?",
                   {nullptr, std::int64_t{-2}, 1.5, std::string("hi"), Blob{0xAB}});
  const Bytes expected = {
      0x41, 0x00, 0x00, 0x00,                          // length 65 = 9 + 56
      0x03,                                            // type EXECUTE
      0x08, 0x07, 0x06, 0x05, 0x04, 0x03, 0x02, 0x01,  // request id, little-endian
      0x10, 0x00, 0x00, 0x00,                          // sql length 16
      'S',  'E',  'L',  'E',  'C',  'T',  ' ',  '?',  ',',  '?',
      ',',  '?',  ',',  '?',  ',',  '?',  0x05, 0x00, 0x00, 0x00,  // 5 params
      0x00,                                                        // NULL
      0x01, 0xFE, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF,        // INTEGER -2
      0x02, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0xF8, 0x3F,        // REAL 1.5
      0x03, 0x02, 0x00, 0x00, 0x00, 'h',  'i',                     // TEXT "hi"
      0x04, 0x01, 0x00, 0x00, 0x00, 0xAB,                          // BLOB {0xAB}
  };
  EXPECT_EQ(hex(wire), hex(expected));
}

// The client's outbox holds earlier frames: a request is appended after them, byte for byte the
// frame it would be alone (an empty TEXT and an empty BLOB included).
TEST(WireLayout, ExecuteAppendedAfterOtherFramesIsTheSameFrame) {
  const Params params{std::string(), Blob{}, std::int64_t{7}};
  Bytes alone;
  encode_statement(alone, MsgType::kExecute, 9, "INSERT INTO t VALUES (?,?,?)", params);
  Bytes outbox;
  encode_empty(outbox, MsgType::kPing, 8);
  const std::size_t before = outbox.size();
  encode_statement(outbox, MsgType::kExecute, 9, "INSERT INTO t VALUES (?,?,?)", params);
  encode_many(outbox, 10, "?", {{std::int64_t{1}}});
  ASSERT_GT(outbox.size(), before + alone.size());
  EXPECT_EQ(hex(Bytes(outbox.begin() + static_cast<std::ptrdiff_t>(before),
                      outbox.begin() + static_cast<std::ptrdiff_t>(before + alone.size()))),
            hex(alone));
  Bytes many;
  encode_many(many, 10, "?", {{std::int64_t{1}}});
  EXPECT_EQ(hex(Bytes(outbox.end() - static_cast<std::ptrdiff_t>(many.size()), outbox.end())),
            hex(many));
}

TEST(WireLayout, ExecuteManyMatchesTheSpec) {
  Bytes wire;
  encode_many(wire, 1, "?", {{std::int64_t{1}}, {}});
  const Bytes expected = {
      0x23, 0x00, 0x00, 0x00,                                // length 35 = 9 + 26
      0x06,                                                  // type EXECUTE_MANY
      0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,        // request id 1
      0x01, 0x00, 0x00, 0x00, '?',                           // sql "?"
      0x02, 0x00, 0x00, 0x00,                                // 2 parameter lists
      0x01, 0x00, 0x00, 0x00,                                // first: 1 value
      0x01, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,  //   INTEGER 1
      0x00, 0x00, 0x00, 0x00,                                // second: no values
  };
  EXPECT_EQ(hex(wire), hex(expected));
}

TEST(WireLayout, ResultMatchesTheSpec) {
  Bytes wire;
  encode_result(wire, 7,
                Result{.changes = 2,
                       .last_rowid = 9,
                       .columns = {"a", "bc"},
                       .rows = {{std::int64_t{1}, nullptr}}});
  const Bytes expected = {
      0x36, 0x00, 0x00, 0x00,                                // length 54 = 9 + 45
      0x83,                                                  // type RESULT
      0x07, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,        // request id 7
      0x02, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,        // changes 2
      0x09, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,        // last_rowid 9
      0x02, 0x00, 0x00, 0x00,                                // 2 columns
      0x01, 0x00, 0x00, 0x00, 'a',                           // "a"
      0x02, 0x00, 0x00, 0x00, 'b',  'c',                     // "bc"
      0x01, 0x00, 0x00, 0x00,                                // 1 row
      0x01, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,  // INTEGER 1
      0x00,                                                  // NULL
  };
  EXPECT_EQ(hex(wire), hex(expected));
}

TEST(WireLayout, ErrorMatchesTheSpec) {
  Bytes wire;
  encode_error(
      wire, 5,
      ErrorReply{
          .domain = ErrorDomain::kSqlite, .code = 19, .extended_code = 2067, .message = "x"});
  encode_pasyn_error(wire, 6, PasynCode::kTooLarge, "");
  const Bytes expected = {
      0x17, 0x00, 0x00, 0x00,                          // length 23 = 9 + 14
      0xFF,                                            // type ERROR
      0x05, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,  // request id 5
      0x00,                                            // domain SQLite
      0x13, 0x00, 0x00, 0x00,                          // code 19 (CONSTRAINT)
      0x13, 0x08, 0x00, 0x00,                          // extended 2067 (CONSTRAINT_UNIQUE)
      0x01, 0x00, 0x00, 0x00, 'x',                     // message "x"
      0x16, 0x00, 0x00, 0x00,                          // length 22 = 9 + 13
      0xFF,                                            // type ERROR
      0x06, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,  // request id 6
      0x01,                                            // domain pasyn
      0x05, 0x00, 0x00, 0x00,                          // code TOO_LARGE
      0x05, 0x00, 0x00, 0x00,                          // extended code equal to code
      0x00, 0x00, 0x00, 0x00,                          // empty message
  };
  EXPECT_EQ(hex(wire), hex(expected));
}

TEST(WireLayout, EmptyFrameIsOnlyTheHeader) {
  Bytes wire;
  encode_empty(wire, MsgType::kPing, 0x1122334455667788);
  const Bytes expected = {
      0x09, 0x00, 0x00, 0x00,                          // length 9
      0x02,                                            // type PING
      0x88, 0x77, 0x66, 0x55, 0x44, 0x33, 0x22, 0x11,  // request id
  };
  EXPECT_EQ(hex(wire), hex(expected));
}

}  // namespace
}  // namespace pasyn::proto::codec_test
