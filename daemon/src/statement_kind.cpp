// Statement kinds judged from SQL text: what must run outside a transaction, how many statements
// a request holds, savepoint and VACUUM statements. See statement_kind.hpp.
#include "statement_kind.hpp"

#include <cctype>

namespace pasyn::server {
namespace {

const char* skip_space_and_comments(const char* p, const char* end) {
  while (p < end) {
    if (std::isspace(static_cast<unsigned char>(*p))) {
      ++p;
    } else if (end - p >= 2 && p[0] == '-' && p[1] == '-') {
      while (p < end && *p != '\n') ++p;
    } else if (end - p >= 2 && p[0] == '/' && p[1] == '*') {
      p += 2;
      while (end - p >= 2 && !(p[0] == '*' && p[1] == '/')) ++p;
      p = end - p >= 2 ? p + 2 : end;
    } else {
      break;
    }
  }
  return p;
}

// Reads an identifier at `p`, lower-cased (ASCII), advancing `p` past it. Runs for every request,
// so it allocates nothing: only short keywords matter, and a longer word matches none of them.
class Word {
 public:
  Word(const char*& p, const char* end) {
    // As SQLite's tokenizer reads an identifier: letters, digits, '_', '$' and every byte of a
    // UTF-8 sequence (review18: `CREATE TABLE données AS ...` was not seen as one).
    for (; p < end && (std::isalnum(static_cast<unsigned char>(*p)) || *p == '_' || *p == '$' ||
                       static_cast<unsigned char>(*p) >= 0x80);
         ++p) {
      add(*p);
    }
  }
  /// A name as SQLite reads one: a word, or quoted in "", '', `` or [] (a doubled quote inside
  /// stands for one), so that `PRAGMA "journal_mode"` is the pragma journal_mode.
  static Word name(const char*& p, const char* end) {
    if (p == end || (*p != '"' && *p != '\'' && *p != '`' && *p != '[')) return Word(p, end);
    const char close = *p == '[' ? ']' : *p;
    Word w;
    for (++p; p < end; ++p) {
      if (*p == close) {
        if (close == ']' || end - p < 2 || p[1] != close) {
          ++p;
          break;
        }
        ++p;  // a doubled quote
      }
      w.add(*p);
    }
    return w;
  }
  bool operator==(std::string_view keyword) const {
    return n_ <= sizeof buf_ && std::string_view(buf_, n_) == keyword;
  }

 private:
  Word() = default;
  void add(char c) {
    if (n_ < sizeof buf_) buf_[n_] = static_cast<char>(c >= 'A' && c <= 'Z' ? c + 32 : c);
    ++n_;
  }
  char buf_[16];
  std::size_t n_ = 0;
};

}  // namespace

bool is_single_statement(std::string_view sql) {
  const char* p = sql.data();
  const char* end = p + sql.size();
  while (p < end && *p != ';') {  // find the end of the first statement
    const char c = *p;
    if (c == '\'' || c == '"' || c == '`' || c == '[') {
      const char close = c == '[' ? ']' : c;
      for (++p; p < end && *p != close; ++p) {
      }
    } else if (end - p >= 2 && ((p[0] == '-' && p[1] == '-') || (p[0] == '/' && p[1] == '*'))) {
      p = skip_space_and_comments(p, end);
      continue;
    }
    if (p < end) ++p;
  }
  return only_space_or_comments(p, end);
}

bool is_savepoint_sql(std::string_view sql) {
  const char* end = sql.data() + sql.size();
  const char* p = skip_space_and_comments(sql.data(), end);
  const Word first(p, end);
  return first == "savepoint" || first == "release" || first == "rollback";
}

bool is_rollback_sql(std::string_view sql) {
  const char* end = sql.data() + sql.size();
  const char* p = skip_space_and_comments(sql.data(), end);
  return Word(p, end) == "rollback";
}

bool is_vacuum(std::string_view sql) {
  const char* end = sql.data() + sql.size();
  const char* p = skip_space_and_comments(sql.data(), end);
  return Word(p, end) == "vacuum";
}

bool is_create_table_as(std::string_view sql) {
  const char* end = sql.data() + sql.size();
  const char* p = skip_space_and_comments(sql.data(), end);
  // Every statement of a request passes here: most do not start with CREATE, seen at once.
  if (p == end || (*p | 0x20) != 'c' || !(Word(p, end) == "create")) return false;
  p = skip_space_and_comments(p, end);
  Word word(p, end);
  if (word == "temp" || word == "temporary") {
    p = skip_space_and_comments(p, end);
    word = Word(p, end);
  }
  if (!(word == "table")) return false;
  p = skip_space_and_comments(p, end);
  const char* const after_table = p;
  if (Word(p, end) == "if") {  // IF NOT EXISTS, or a table named "if"
    p = skip_space_and_comments(p, end);
    if (Word(p, end) == "not") {
      p = skip_space_and_comments(p, end);
      if (!(Word(p, end) == "exists")) return false;
      p = skip_space_and_comments(p, end);
    } else {
      p = after_table;
    }
  } else {
    p = after_table;
  }
  (void)Word::name(p, end);
  p = skip_space_and_comments(p, end);
  if (p < end && *p == '.') {  // schema.table
    p = skip_space_and_comments(p + 1, end);
    (void)Word::name(p, end);
    p = skip_space_and_comments(p, end);
  }
  return Word(p, end) == "as";
}

bool must_run_alone(std::string_view sql) {
  const char* end = sql.data() + sql.size();
  const char* p = skip_space_and_comments(sql.data(), end);
  // Every request passes here: most start with neither VACUUM nor PRAGMA, seen at once.
  if (p == end || ((*p | 0x20) != 'v' && (*p | 0x20) != 'p')) return false;
  const Word first(p, end);
  if (first == "vacuum") return true;
  if (first != "pragma") return false;
  p = skip_space_and_comments(p, end);
  Word name = Word::name(p, end);
  p = skip_space_and_comments(p, end);
  if (p < end && *p == '.') {  // schema.pragma
    p = skip_space_and_comments(p + 1, end);
    name = Word::name(p, end);
  }
  static constexpr std::string_view kAlone[] = {"journal_mode", "foreign_keys", "locking_mode",
                                                "page_size",    "auto_vacuum",  "wal_checkpoint"};
  for (auto n : kAlone) {
    if (name == n) return true;
  }
  return false;
}

bool only_space_or_comments(const char* p, const char* end) {
  for (;;) {  // empty statements (a stray ';') count as nothing too
    p = skip_space_and_comments(p, end);
    if (p == end) return true;
    if (*p != ';') return false;
    ++p;
  }
}

}  // namespace pasyn::server
