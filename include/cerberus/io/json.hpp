// JSON (RFC 8259): a small strict value type, a parser and a writer. Ours because the design card
// fixes the dependency list; it serves safetensors headers, model configs and datasets.
//
// - Numbers keep their kind: an integer literal that fits in int64 stays an exact integer, any
//   other number is a double. Objects keep insertion order (the writer's output is deterministic
//   and a file round-trips unchanged); duplicate keys are an error, as is any byte outside the
//   grammar, invalid UTF-8, a lone surrogate or nesting deeper than `max_depth`.
// - Parse errors say where: `[json] config.json: line 3, column 14: expected ',' or '}', found 'x'`.
// - JsonRef carries the path that reached a value, so a reader's complaint names the field:
//   `[json] config.d_model: expected integer, found string`.
#pragma once

#include <algorithm>
#include <charconv>
#include <cmath>
#include <concepts>
#include <cstdio>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>
#include <variant>
#include <vector>

#include "cerberus/core/error.hpp"
#include "cerberus/io/file.hpp"

namespace cerberus::io {

// JSON text that does not parse, or a value that is not what its reader expected. A FileError,
// because JSON comes from files: one catch covers a bad config whichever way it is bad.
class JsonError : public FileError {
 public:
  using FileError::FileError;
};

// A syntax error, with its position (byte offset from 0; line and column from 1, column in bytes)
// and the bare "expected X, found Y" so that callers (safetensors) can rephrase the position.
class JsonParseError : public JsonError {
 public:
  JsonParseError(const std::string& message, std::size_t offset, std::size_t line, std::size_t column, std::string detail)
      : JsonError(message), offset_(offset), line_(line), column_(column), detail_(std::move(detail)) {}
  std::size_t offset() const { return offset_; }
  std::size_t line() const { return line_; }
  std::size_t column() const { return column_; }
  const std::string& detail() const { return detail_; }

 private:
  std::size_t offset_, line_, column_;
  std::string detail_;
};

namespace detail {
// Length of the valid UTF-8 sequence starting at s[i], or 0 (overlong forms, surrogates and
// code points above U+10FFFF are invalid, per RFC 3629). Never reads past s.
inline std::size_t utf8_sequence_length(std::string_view s, std::size_t i) {
  const auto b = [&](std::size_t k) { return static_cast<unsigned char>(s[k]); };
  const unsigned char c = b(i);
  if (c < 0x80) return 1;
  std::size_t n = 0;
  unsigned char lo = 0x80, hi = 0xBF;  // allowed range of the second byte
  if (c >= 0xC2 && c <= 0xDF) n = 2;
  else if (c >= 0xE0 && c <= 0xEF) n = 3, lo = c == 0xE0 ? 0xA0 : 0x80, hi = c == 0xED ? 0x9F : 0xBF;
  else if (c >= 0xF0 && c <= 0xF4) n = 4, lo = c == 0xF0 ? 0x90 : 0x80, hi = c == 0xF4 ? 0x8F : 0xBF;
  else return 0;
  if (i + n > s.size() || b(i + 1) < lo || b(i + 1) > hi) return 0;
  for (std::size_t k = 2; k < n; ++k)
    if ((b(i + k) & 0xC0) != 0x80) return 0;
  return n;
}
inline void append_utf8(std::string& out, std::uint32_t cp) {
  if (cp < 0x80) {
    out += static_cast<char>(cp);
  } else if (cp < 0x800) {
    out += static_cast<char>(0xC0 | (cp >> 6));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  } else if (cp < 0x10000) {
    out += static_cast<char>(0xE0 | (cp >> 12));
    out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  } else {
    out += static_cast<char>(0xF0 | (cp >> 18));
    out += static_cast<char>(0x80 | ((cp >> 12) & 0x3F));
    out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  }
}
}  // namespace detail

class Json {
 public:
  enum class Kind { null, boolean, integer, number, string, array, object };
  using Array = std::vector<Json>;
  using Object = std::vector<std::pair<std::string, Json>>;  // insertion order, unique keys

  Json() = default;
  Json(std::nullptr_t) {}                  // NOLINT: implicit, as JSON literals read
  Json(bool b) : v_(b) {}                  // NOLINT
  template <std::integral I>
    requires(!std::same_as<I, bool>)
  Json(I i) : v_(static_cast<std::int64_t>(i)) {  // NOLINT
    if constexpr (std::is_unsigned_v<I> && sizeof(I) >= sizeof(std::int64_t))
      if (i > static_cast<I>(INT64_MAX)) throw JsonError("[json] integer " + std::to_string(i) + " does not fit in int64");
  }
  Json(double d) : v_(d) {}                // NOLINT
  Json(const char* s) : v_(std::string(s)) {}       // NOLINT
  Json(std::string s) : v_(std::move(s)) {}         // NOLINT
  Json(std::string_view s) : v_(std::string(s)) {}  // NOLINT
  Json(Array a) : v_(std::move(a)) {}               // NOLINT
  Json(Object o) : v_(std::move(o)) {}              // NOLINT
  static Json array() { return Json(Array{}); }
  static Json object() { return Json(Object{}); }

  Kind kind() const { return static_cast<Kind>(v_.index()); }
  static const char* kind_name(Kind k) {
    constexpr const char* names[] = {"null", "boolean", "integer", "number", "string", "array", "object"};
    return names[static_cast<int>(k)];
  }
  bool is_null() const { return kind() == Kind::null; }
  bool is_object() const { return kind() == Kind::object; }
  bool is_array() const { return kind() == Kind::array; }

  // Typed access. `path` names this value in the error ("config.d_model"). as_double accepts
  // integers too; as_int accepts only integer literals (1.0 is a number, not an integer).
  bool as_bool(std::string_view path = "value") const { return get<bool>(Kind::boolean, path); }
  std::int64_t as_int(std::string_view path = "value") const { return get<std::int64_t>(Kind::integer, path); }
  double as_double(std::string_view path = "value") const {
    if (kind() == Kind::integer) return static_cast<double>(std::get<std::int64_t>(v_));
    return get<double>(Kind::number, path);
  }
  const std::string& as_string(std::string_view path = "value") const { return get<std::string>(Kind::string, path); }
  const Array& as_array(std::string_view path = "value") const { return get<Array>(Kind::array, path); }
  const Object& as_object(std::string_view path = "value") const { return get<Object>(Kind::object, path); }
  Array& as_array(std::string_view path = "value") { return const_cast<Array&>(std::as_const(*this).as_array(path)); }
  Object& as_object(std::string_view path = "value") { return const_cast<Object&>(std::as_const(*this).as_object(path)); }

  // Object member, or nullptr when absent (or when this is not an object).
  const Json* find(std::string_view key) const {
    if (!is_object()) return nullptr;
    for (const auto& [k, v] : std::get<Object>(v_))
      if (k == key) return &v;
    return nullptr;
  }
  bool contains(std::string_view key) const { return find(key) != nullptr; }
  // Member for writing: a null becomes an empty object, a missing key is appended.
  Json& operator[](std::string_view key) {
    if (is_null()) v_ = Object{};
    Object& o = as_object();
    for (auto& [k, v] : o)
      if (k == key) return v;
    return o.emplace_back(std::string(key), Json()).second;
  }
  // Appends to an array (a null becomes an empty array).
  void push_back(Json value) {
    if (is_null()) v_ = Array{};
    as_array().push_back(std::move(value));
  }
  // Elements of an array or members of an object.
  std::size_t size() const {
    if (is_array()) return std::get<Array>(v_).size();
    if (is_object()) return std::get<Object>(v_).size();
    throw JsonError(std::string("[json] size: expected array or object, found ") + kind_name(kind()));
  }

  // Compact (indent < 0: no spaces, serde_json's layout, which safetensors headers use) or
  // indented with `indent` spaces per level (Python's json.dumps(indent=n) layout).
  std::string dump(int indent = -1) const {
    std::string out;
    write(out, indent, 0, "value");
    return out;
  }

  friend bool operator==(const Json& a, const Json& b) { return a.v_ == b.v_; }

 private:
  template <class V>
  const V& get(Kind want, std::string_view path) const {
    if (kind() != want)
      throw JsonError("[json] " + std::string(path) + ": expected " + kind_name(want) + ", found " + kind_name(kind()));
    return std::get<V>(v_);
  }

  static void write_string(std::string& out, std::string_view s, std::string_view path) {
    out += '"';
    for (std::size_t i = 0; i < s.size();) {
      const std::size_t n = detail::utf8_sequence_length(s, i);
      if (n == 0)  // the output would not parse back
        throw JsonError("[json] " + std::string(path) + ": string is not valid UTF-8 at byte " + std::to_string(i));
      const auto c = static_cast<unsigned char>(s[i]);
      if (c == '"') out += "\\\"";
      else if (c == '\\') out += "\\\\";
      else if (c == '\b') out += "\\b";
      else if (c == '\f') out += "\\f";
      else if (c == '\n') out += "\\n";
      else if (c == '\r') out += "\\r";
      else if (c == '\t') out += "\\t";
      else if (c < 0x20) out += std::string("\\u00") + "0123456789abcdef"[c >> 4] + "0123456789abcdef"[c & 15];
      else out.append(s.substr(i, n));
      i += n;
    }
    out += '"';
  }

  void write(std::string& out, int indent, int level, const std::string& path) const {
    const auto newline = [&](int lvl) {
      if (indent >= 0) out += '\n' + std::string(static_cast<std::size_t>(indent * lvl), ' ');
    };
    char buf[32];
    switch (kind()) {
      case Kind::null: out += "null"; break;
      case Kind::boolean: out += std::get<bool>(v_) ? "true" : "false"; break;
      case Kind::integer: out.append(buf, std::to_chars(buf, buf + sizeof buf, std::get<std::int64_t>(v_)).ptr); break;
      case Kind::number: {
        const double d = std::get<double>(v_);
        if (!std::isfinite(d)) throw JsonError("[json] " + path + ": cannot write " + std::to_string(d) + " (JSON has no NaN or infinity)");
        const std::string_view text(buf, static_cast<std::size_t>(std::to_chars(buf, buf + sizeof buf, d).ptr - buf));
        out += text;  // shortest text that reads back to the same double
        if (text.find_first_of(".eE") == std::string_view::npos) out += ".0";  // stays a number, not an integer
        break;
      }
      case Kind::string: write_string(out, std::get<std::string>(v_), path); break;
      case Kind::array: {
        const Array& a = std::get<Array>(v_);
        out += '[';
        for (std::size_t i = 0; i < a.size(); ++i) {
          if (i) out += ',';
          newline(level + 1);
          a[i].write(out, indent, level + 1, path + "[" + std::to_string(i) + "]");
        }
        if (!a.empty()) newline(level);
        out += ']';
        break;
      }
      case Kind::object: {
        const Object& o = std::get<Object>(v_);
        out += '{';
        for (std::size_t i = 0; i < o.size(); ++i) {
          if (i) out += ',';
          newline(level + 1);
          write_string(out, o[i].first, path);
          out += indent >= 0 ? ": " : ":";
          o[i].second.write(out, indent, level + 1, path + "." + o[i].first);
        }
        if (!o.empty()) newline(level);
        out += '}';
        break;
      }
    }
  }

  std::variant<std::nullptr_t, bool, std::int64_t, double, std::string, Array, Object> v_;
};

// A value with the path that reached it, for readers whose errors must name the field:
//   JsonRef cfg(root, "config");  cfg.at("d_model").as_int();
//   -> "[json] config.d_model: expected integer, found string"
class JsonRef {
 public:
  JsonRef(const Json& value, std::string path) : value_(&value), path_(std::move(path)) {}

  const Json& value() const { return *value_; }
  const std::string& path() const { return path_; }
  Json::Kind kind() const { return value_->kind(); }

  JsonRef at(std::string_view key) const {
    value_->as_object(path_);
    const Json* v = value_->find(key);
    if (!v) throw JsonError("[json] " + path_ + ": expected a member \"" + std::string(key) + "\", found none");
    return JsonRef(*v, path_ + "." + std::string(key));
  }
  std::optional<JsonRef> find(std::string_view key) const {
    value_->as_object(path_);
    const Json* v = value_->find(key);
    if (!v) return std::nullopt;
    return JsonRef(*v, path_ + "." + std::string(key));
  }
  JsonRef at(std::size_t i) const {
    const Json::Array& a = value_->as_array(path_);
    if (i >= a.size())
      throw JsonError("[json] " + path_ + ": expected at least " + std::to_string(i + 1) + " elements, found " + std::to_string(a.size()));
    return JsonRef(a[i], path_ + "[" + std::to_string(i) + "]");
  }
  std::size_t size() const {
    if (value_->is_array() || value_->is_object()) return value_->size();
    throw JsonError("[json] " + path_ + ": expected array or object, found " + Json::kind_name(kind()));
  }
  // Member keys of an object, in file order.
  std::vector<std::string> keys() const {
    std::vector<std::string> out;
    for (const auto& kv : value_->as_object(path_)) out.push_back(kv.first);
    return out;
  }

  bool as_bool() const { return value_->as_bool(path_); }
  std::int64_t as_int() const { return value_->as_int(path_); }
  double as_double() const { return value_->as_double(path_); }
  const std::string& as_string() const { return value_->as_string(path_); }

 private:
  const Json* value_;
  std::string path_;
};

namespace detail {

// Recursive descent over a string_view; every read is bounds-checked (peek() past the end is
// '\0' and reported as "end of input").
class JsonParser {
 public:
  JsonParser(std::string_view text, std::string_view source, int max_depth) : s_(text), source_(source), max_depth_(max_depth) {}

  Json parse() {
    Json root = value(0);
    skip_ws();
    if (pos_ != s_.size()) fail("end of input");
    return root;
  }

 private:
  bool at_end() const { return pos_ >= s_.size(); }
  char peek() const { return at_end() ? '\0' : s_[pos_]; }

  std::string found() const {
    if (at_end()) return "end of input";
    const auto c = static_cast<unsigned char>(s_[pos_]);
    if (c >= 0x20 && c < 0x7F) return std::string("'") + static_cast<char>(c) + "'";
    char hex[8];
    std::snprintf(hex, sizeof hex, "0x%02X", c);
    return std::string("byte ") + hex;
  }
  [[noreturn]] void fail(const std::string& expected) const { fail_at(pos_, "expected " + expected + ", found " + found()); }
  [[noreturn]] void fail_at(std::size_t at, const std::string& detail) const {
    std::size_t line = 1, column = 1;
    for (std::size_t i = 0; i < at && i < s_.size(); ++i) {
      if (s_[i] == '\n') ++line, column = 1;
      else ++column;
    }
    throw JsonParseError("[json] " + std::string(source_) + ": line " + std::to_string(line) + ", column " + std::to_string(column) + ": " + detail,
                         at, line, column, detail);
  }

  void skip_ws() {
    while (!at_end() && (s_[pos_] == ' ' || s_[pos_] == '\t' || s_[pos_] == '\n' || s_[pos_] == '\r')) ++pos_;
  }
  void expect(char c, const char* what) {
    if (peek() != c || at_end()) fail(what);
    ++pos_;
  }

  Json value(int depth) {
    skip_ws();
    switch (peek()) {
      case '{': return object(depth + 1);
      case '[': return array(depth + 1);
      case '"': return Json(string());
      case 't': return literal("true", Json(true));
      case 'f': return literal("false", Json(false));
      case 'n': return literal("null", Json());
      default:
        if (peek() == '-' || (peek() >= '0' && peek() <= '9')) return number();
        fail("a JSON value");
    }
  }
  Json literal(std::string_view word, Json v) {
    for (char c : word) {
      if (at_end() || peek() != c) {
        std::string quoted_word(1, '\'');  // built by appending: GCC 12 -O3 misreports "'" + s (-Wrestrict)
        quoted_word.append(word).push_back('\'');
        fail(quoted_word);
      }
      ++pos_;
    }
    return v;
  }
  void check_depth(int depth) const {
    if (depth > max_depth_)
      fail_at(pos_, "expected at most " + std::to_string(max_depth_) + " nested arrays and objects, found deeper nesting");
  }

  Json array(int depth) {
    check_depth(depth);
    ++pos_;  // '['
    Json::Array a;
    skip_ws();
    if (peek() == ']') return ++pos_, Json(std::move(a));
    for (;;) {
      a.push_back(value(depth));
      skip_ws();
      if (peek() == ']' && !at_end()) return ++pos_, Json(std::move(a));
      expect(',', "',' or ']'");
    }
  }

  Json object(int depth) {
    check_depth(depth);
    ++pos_;  // '{'
    Json::Object o;
    std::vector<std::size_t> key_at;  // offsets of the keys, for the duplicate-key error
    skip_ws();
    if (peek() == '}') return ++pos_, Json(std::move(o));
    for (;;) {
      skip_ws();
      if (peek() != '"' || at_end()) fail("a string key");
      key_at.push_back(pos_);
      std::string key = string();
      skip_ws();
      expect(':', "':'");
      o.emplace_back(std::move(key), value(depth));
      skip_ws();
      if (peek() == '}' && !at_end()) break;
      expect(',', "',' or '}'");
    }
    ++pos_;
    // Duplicates in O(n log n): headers may hold thousands of tensors.
    std::vector<std::size_t> order(o.size());
    for (std::size_t i = 0; i < order.size(); ++i) order[i] = i;
    std::stable_sort(order.begin(), order.end(), [&](std::size_t a, std::size_t b) { return o[a].first < o[b].first; });
    std::size_t dup = o.size();
    for (std::size_t i = 1; i < order.size(); ++i)
      if (o[order[i]].first == o[order[i - 1]].first) dup = std::min(dup, order[i]);
    if (dup < o.size()) fail_at(key_at[dup], "expected a unique key, found a second \"" + o[dup].first + "\"");
    return Json(std::move(o));
  }

  std::uint32_t hex4() {
    std::uint32_t v = 0;
    for (int k = 0; k < 4; ++k) {
      const char c = peek();
      int d = -1;
      if (c >= '0' && c <= '9') d = c - '0';
      else if (c >= 'a' && c <= 'f') d = c - 'a' + 10;
      else if (c >= 'A' && c <= 'F') d = c - 'A' + 10;
      if (d < 0 || at_end()) fail("a hex digit");
      v = v * 16 + static_cast<std::uint32_t>(d);
      ++pos_;
    }
    return v;
  }

  std::string string() {
    ++pos_;  // opening quote
    std::string out;
    for (;;) {
      if (at_end()) fail("'\"' closing the string");
      const auto c = static_cast<unsigned char>(s_[pos_]);
      if (c == '"') return ++pos_, out;
      if (c < 0x20) fail("a string character (control characters must be escaped)");
      if (c != '\\') {
        const std::size_t n = utf8_sequence_length(s_, pos_);
        if (n == 0) fail("valid UTF-8");
        out.append(s_.substr(pos_, n));
        pos_ += n;
        continue;
      }
      ++pos_;
      const char e = peek();
      if (at_end()) fail("an escape character");
      ++pos_;
      switch (e) {
        case '"': out += '"'; break;
        case '\\': out += '\\'; break;
        case '/': out += '/'; break;
        case 'b': out += '\b'; break;
        case 'f': out += '\f'; break;
        case 'n': out += '\n'; break;
        case 'r': out += '\r'; break;
        case 't': out += '\t'; break;
        case 'u': {
          const std::size_t start = pos_ - 2;
          std::uint32_t cp = hex4();
          if (cp >= 0xDC00 && cp <= 0xDFFF) fail_at(start, "expected a high surrogate before a low one, found a lone \\u" + std::string(s_.substr(start + 2, 4)));
          if (cp >= 0xD800 && cp <= 0xDBFF) {  // UTF-16 pair -> one code point
            if (peek() != '\\' || pos_ + 1 >= s_.size() || s_[pos_ + 1] != 'u') fail("a \\u low surrogate after the high surrogate");
            pos_ += 2;
            const std::uint32_t lo = hex4();
            if (lo < 0xDC00 || lo > 0xDFFF) fail_at(pos_ - 6, "expected a low surrogate (\\uDC00-\\uDFFF), found \\u" + std::string(s_.substr(pos_ - 4, 4)));
            cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
          }
          append_utf8(out, cp);
          break;
        }
        default: --pos_, fail("an escape character (one of \"\\/bfnrtu)");
      }
    }
  }

  Json number() {
    const std::size_t start = pos_;
    const auto digits = [&] {
      if (!(peek() >= '0' && peek() <= '9')) fail("a digit");
      while (peek() >= '0' && peek() <= '9') ++pos_;
    };
    if (peek() == '-') ++pos_;
    if (peek() == '0') ++pos_;  // no leading zeros: "01" stops after the 0
    else digits();
    bool integer = true;
    if (peek() == '.') ++pos_, digits(), integer = false;
    if (peek() == 'e' || peek() == 'E') {
      ++pos_, integer = false;
      if (peek() == '+' || peek() == '-') ++pos_;
      digits();
    }
    const char* first = s_.data() + start;
    const char* last = s_.data() + pos_;
    if (integer) {
      std::int64_t i = 0;
      if (std::from_chars(first, last, i).ec == std::errc()) return Json(i);
    }
    double d = 0;
    if (std::from_chars(first, last, d).ec != std::errc())  // only out of range can fail here
      fail_at(start, "expected a number within double range, found " + std::string(first, last));
    return Json(d);
  }

  std::string_view s_;
  std::string_view source_;
  int max_depth_;
  std::size_t pos_ = 0;
};

}  // namespace detail

// Parses one JSON text (surrounding whitespace allowed). `source` names it in errors (a file
// name); nesting deeper than `max_depth` arrays/objects is refused rather than recursed into.
inline Json parse_json(std::string_view text, std::string_view source = "<string>", int max_depth = 128) {
  return detail::JsonParser(text, source, max_depth).parse();
}

// A JSON file (the file name appears in every error).
inline Json read_json_file(const std::string& path, int max_depth = 128) { return parse_json(read_file(path, "json"), path, max_depth); }

// Writes `value` atomically (see AtomicFile), indented, with a final newline.
inline void write_json_file(const std::string& path, const Json& value, int indent = 2) {
  const std::string text = value.dump(indent) + "\n";
  AtomicFile file(path, "json");
  file.write(text.data(), text.size());
  file.commit();
}

}  // namespace cerberus::io
