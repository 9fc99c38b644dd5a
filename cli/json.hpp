// JSON text shared by the `pasyn` CLI and pasyn-bench: strings and numbers that are always
// valid JSON, whatever the input.
//
// Thread-safety: pure functions. Ownership: they return new strings.
#pragma once

#include <string>
#include <string_view>

namespace pasyn::json {

/// `s` as a JSON string literal. SQLite text need not be UTF-8: each byte that does not start a
/// valid UTF-8 sequence (RFC 3629: no overlong forms, surrogates or code points past U+10FFFF)
/// becomes U+FFFD; control characters and DEL are escaped.
std::string json_string(std::string_view s);

/// `d` as a JSON number with `significant_digits` digits (17 round-trips a double); NaN and the
/// infinities, which JSON cannot express, as null.
std::string json_number(double d, int significant_digits = 17);

}  // namespace pasyn::json
