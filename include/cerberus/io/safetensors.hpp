// safetensors files (https://github.com/huggingface/safetensors), read and written byte for byte
// as the reference (Rust) implementation does:
//
//   [u64 little-endian N] [N bytes of JSON header, space-padded to a multiple of 8] [raw data]
//   header = {"__metadata__": {"k": "v", ...}, "name": {"dtype": "F32", "shape": [2, 3],
//             "data_offsets": [begin, end]}, ...}       offsets relative to the start of the data
//
// Writing sorts tensors by dtype alignment (largest first) then by name, as the reference writer
// does, so equal inputs give identical files; non-contiguous tensors are written contiguously.
// Metadata keys are written sorted (the reference writes a HashMap in unspecified order).
//
// Reading validates like the reference reader: header length <= 100 MB and inside the file, the
// header is one JSON object starting with '{', dtype/shape/data_offsets present and well formed,
// offsets (in order) start at 0, follow each other with no gap or overlap, and end exactly at the
// end of the file, and each span is product(shape) * dtype size bytes (with overflow checks).
// Duplicate names are refused. Every problem is a FileError naming the file, the place (byte
// offset, tensor, header field) and what was expected.
//
// SafetensorsFile reads the header when opened and each tensor on request with pread, straight
// into the tensor's own storage: one copy, no second buffer of the whole file, and (unlike mmap)
// a file truncated behind our back is a clean short-read error instead of a SIGBUS.
#pragma once

#include <algorithm>
#include <bit>
#include <cstdint>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <type_traits>
#include <variant>
#include <vector>

#include "cerberus/core/dtype.hpp"
#include "cerberus/core/error.hpp"
#include "cerberus/io/file.hpp"
#include "cerberus/io/json.hpp"
#include "cerberus/tensor/tensor.hpp"

namespace cerberus::io {

static_assert(std::endian::native == std::endian::little, "safetensors data is little-endian; this reader copies it as is.");

// Every dtype of the format, in the reference's order (increasing alignment; the writer sorts by
// it, descending). cerberus reads and writes the ones that are Element types; the others are
// understood (sizes validated, listed) but refused by tensor<T>().
enum class Dtype { BOOL, U8, I8, F8_E5M2, F8_E4M3, I16, U16, F16, BF16, I32, U32, F32, F64, I64, U64 };

namespace detail {
struct DtypeInfo {
  Dtype dtype;
  std::string_view name;
  std::uint64_t size;
};
inline constexpr DtypeInfo dtype_table[] = {
    {Dtype::BOOL, "BOOL", 1}, {Dtype::U8, "U8", 1},     {Dtype::I8, "I8", 1},     {Dtype::F8_E5M2, "F8_E5M2", 1},
    {Dtype::F8_E4M3, "F8_E4M3", 1}, {Dtype::I16, "I16", 2}, {Dtype::U16, "U16", 2}, {Dtype::F16, "F16", 2},
    {Dtype::BF16, "BF16", 2}, {Dtype::I32, "I32", 4},   {Dtype::U32, "U32", 4},   {Dtype::F32, "F32", 4},
    {Dtype::F64, "F64", 8},   {Dtype::I64, "I64", 8},   {Dtype::U64, "U64", 8}};
}  // namespace detail

inline std::string_view to_string(Dtype d) { return detail::dtype_table[static_cast<int>(d)].name; }
inline std::uint64_t dtype_size(Dtype d) { return detail::dtype_table[static_cast<int>(d)].size; }
inline std::optional<Dtype> parse_dtype(std::string_view name) {
  for (const auto& e : detail::dtype_table)
    if (e.name == name) return e.dtype;
  return std::nullopt;
}
// The file dtype of an element type (its name is dtype_name<T>()).
template <Element T>
constexpr Dtype dtype_of() {
  if constexpr (std::is_same_v<T, float>) return Dtype::F32;
  else if constexpr (std::is_same_v<T, double>) return Dtype::F64;
  else if constexpr (std::is_same_v<T, bfloat16>) return Dtype::BF16;
  else if constexpr (std::is_same_v<T, std::int64_t>) return Dtype::I64;
  else if constexpr (std::is_same_v<T, std::int32_t>) return Dtype::I32;
  else return Dtype::U8;
}
inline bool is_element_dtype(Dtype d) {
  return d == Dtype::F32 || d == Dtype::F64 || d == Dtype::BF16 || d == Dtype::I64 || d == Dtype::I32 || d == Dtype::U8;
}

// A cpu tensor of any element type: what a file holds side by side.
using AnyTensor = std::variant<Tensor<float>, Tensor<double>, Tensor<bfloat16>, Tensor<std::int64_t>, Tensor<std::int32_t>, Tensor<std::uint8_t>>;
struct NamedTensor {
  std::string name;
  AnyTensor tensor;
};
// String-to-string, as the format allows.
using Metadata = std::map<std::string, std::string>;

// One entry of the header. Offsets are relative to the start of the data (byte 8 + N).
struct TensorInfo {
  std::string name;
  Dtype dtype = Dtype::F32;
  std::vector<std::int64_t> shape;  // a vector: the file may hold ranks a Shape cannot
  std::uint64_t begin = 0, end = 0;
};

namespace detail {
inline std::string shape_string(const std::vector<std::int64_t>& shape) {
  std::string s = "[";
  for (std::size_t i = 0; i < shape.size(); ++i) s += (i ? ", " : "") + std::to_string(shape[i]);
  return s + "]";
}
inline std::string quote_name(std::string_view name) { return "'" + std::string(name) + "'"; }
inline bool valid_utf8(std::string_view s) {
  for (std::size_t i = 0; i < s.size();) {
    const std::size_t n = utf8_sequence_length(s, i);
    if (n == 0) return false;
    i += n;
  }
  return true;
}
}  // namespace detail

// Writes `tensors` and `metadata` to `path` atomically (see AtomicFile).
inline void save_safetensors(const std::string& path, const std::vector<NamedTensor>& tensors, const Metadata& metadata = {}) {
  const std::string op = "save_safetensors";
  struct Entry {
    const NamedTensor* source;
    Dtype dtype;
  };
  std::vector<Entry> entries;
  std::set<std::string_view> names;
  for (const auto& t : tensors) {
    const auto fail = [&](const std::string& why) { throw ValueError("[" + op + "] " + path + ": tensor " + detail::quote_name(t.name) + " " + why); };
    if (t.name == "__metadata__") fail("has the name reserved for the metadata");
    if (!detail::valid_utf8(t.name)) fail("has a name that is not valid UTF-8");
    if (!names.insert(t.name).second) fail("appears twice");
    const bool defined = std::visit([](const auto& x) { return x.defined(); }, t.tensor);
    if (!defined) fail("is undefined (a default-constructed Tensor)");
    entries.push_back({&t, std::visit([](const auto& x) { return dtype_of<typename std::decay_t<decltype(x)>::value_type>(); }, t.tensor)});
  }
  for (const auto& [k, v] : metadata)
    if (!detail::valid_utf8(k) || !detail::valid_utf8(v))
      throw ValueError("[" + op + "] " + path + ": metadata entry " + detail::quote_name(k) + " is not valid UTF-8");
  std::sort(entries.begin(), entries.end(), [](const Entry& a, const Entry& b) {
    return a.dtype != b.dtype ? a.dtype > b.dtype : a.source->name < b.source->name;
  });

  Json header = Json::object();
  if (!metadata.empty()) {
    Json& m = header["__metadata__"] = Json::object();
    for (const auto& [k, v] : metadata) m[k] = v;
  }
  std::uint64_t offset = 0;
  for (const auto& e : entries) {
    Json info = Json::object(), shape = Json::array();
    const Shape s = std::visit([](const auto& x) { return x.shape(); }, e.source->tensor);
    for (const Index d : s) shape.push_back(d);
    const std::uint64_t bytes = static_cast<std::uint64_t>(s.numel()) * dtype_size(e.dtype);
    info["dtype"] = to_string(e.dtype);
    info["shape"] = std::move(shape);
    info["data_offsets"] = Json(Json::Array{Json(offset), Json(offset + bytes)});
    header.as_object().emplace_back(e.source->name, std::move(info));  // names checked unique above
    offset += bytes;
  }
  std::string text = header.dump();
  text.append((8 - text.size() % 8) % 8, ' ');  // data starts 8-byte aligned

  unsigned char length[8];
  for (int i = 0; i < 8; ++i) length[i] = static_cast<unsigned char>(static_cast<std::uint64_t>(text.size()) >> (8 * i));
  AtomicFile file(path, op);
  file.write(length, 8);
  file.write(text.data(), text.size());
  for (const auto& e : entries)
    std::visit(
        [&](const auto& t) {
          const auto c = t.detach().contiguous();  // detach: no autograd node for a copy made to save
          if (c.numel() > 0) file.write(c.data(), static_cast<std::size_t>(c.numel()) * sizeof(*c.data()));
        },
        e.source->tensor);
  file.commit();
}

class SafetensorsFile {
 public:
  static constexpr std::uint64_t max_header_bytes = 100'000'000;  // the reference's limit

  // Opens `path` and validates its header against the file size (see the top of this file).
  explicit SafetensorsFile(const std::string& path) : file_(path, "safetensors") { read_header(); }

  const std::string& path() const { return file_.path(); }
  // Entries in data order (by offset).
  const std::vector<TensorInfo>& tensors() const { return infos_; }
  std::vector<std::string> names() const {
    std::vector<std::string> out;
    for (const auto& i : infos_) out.push_back(i.name);
    return out;
  }
  bool contains(std::string_view name) const { return index_.find(name) != index_.end(); }
  const TensorInfo& info(std::string_view name) const {
    const auto it = index_.find(name);
    if (it == index_.end()) {
      std::string have;
      for (std::size_t i = 0; i < infos_.size() && i < 8; ++i) have += (i ? ", " : "") + detail::quote_name(infos_[i].name);
      if (infos_.size() > 8) have += ", ...";
      throw FileError("[safetensors] " + path() + ": no tensor named " + detail::quote_name(name) + " (the file has " +
                      std::to_string(infos_.size()) + (infos_.empty() ? ")" : ": " + have + ")"));
    }
    return infos_[it->second];
  }
  const Metadata& metadata() const { return metadata_; }
  // File offset of the first data byte (8 + header length).
  std::uint64_t data_start() const { return data_start_; }

  // The tensor `name`, whose dtype must be T's (no silent conversion: convert with .to<U>()).
  template <Element T>
  Tensor<T> tensor(std::string_view name) const {
    const TensorInfo& i = info(name);
    const std::string where = "[safetensors] " + path() + ": tensor " + detail::quote_name(name);
    if (!is_element_dtype(i.dtype))
      throw FileError(where + ": unsupported dtype " + std::string(to_string(i.dtype)) + " (cerberus reads F32, F64, BF16, I64, I32 and U8)");
    if (i.dtype != dtype_of<T>())
      throw FileError(where + " has dtype " + std::string(to_string(i.dtype)) + ", but " + std::string(dtype_name<T>()) + " was requested");
    if (i.shape.size() > static_cast<std::size_t>(max_rank))
      throw FileError(where + " has rank " + std::to_string(i.shape.size()) + "; cerberus tensors have at most " + std::to_string(max_rank));
    auto t = Tensor<T>::empty(Shape(std::span<const Index>(i.shape.data(), i.shape.size())));
    if (i.end > i.begin) file_.read_exact(t.data(), static_cast<std::size_t>(i.end - i.begin), data_start_ + i.begin, "tensor " + detail::quote_name(name));
    return t;
  }

 private:
  [[noreturn]] void fail(const std::string& what) const { throw FileError("[safetensors] " + path() + ": " + what); }

  void read_header() {
    const std::uint64_t size = file_.size();
    if (size < 8) fail("the file has " + std::to_string(size) + " bytes; expected at least 8 (the header length)");
    unsigned char length[8];
    file_.read_exact(length, 8, 0, "the header length");
    std::uint64_t n = 0;
    for (int i = 7; i >= 0; --i) n = (n << 8) | length[i];
    if (n > max_header_bytes)
      fail("header length " + std::to_string(n) + " (bytes 0..8) exceeds the limit of " + std::to_string(max_header_bytes) + " bytes");
    if (n > size - 8)
      fail("header length " + std::to_string(n) + " (bytes 0..8) runs past the end of the file: the header would end at byte " +
           std::to_string(8 + n) + " but the file has " + std::to_string(size) + " bytes");
    data_start_ = 8 + n;
    std::string text(static_cast<std::size_t>(n), '\0');
    file_.read_exact(text.data(), text.size(), 8, "the header");
    if (text.empty() || text[0] != '{')
      fail("expected the header to start with '{' at byte 8, found " + (text.empty() ? std::string("an empty header") : "'" + text.substr(0, 1) + "'"));
    Json root;
    try {
      root = parse_json(text, path());
    } catch (const JsonParseError& e) {
      fail("header JSON at byte " + std::to_string(8 + e.offset()) + " (header line " + std::to_string(e.line()) + ", column " +
           std::to_string(e.column()) + "): " + e.detail());
    }

    for (const auto& [key, value] : root.as_object()) {
      if (key == "__metadata__") read_metadata(value);
      else infos_.push_back(read_info(key, value));
    }
    std::sort(infos_.begin(), infos_.end(), [](const TensorInfo& a, const TensorInfo& b) {
      return a.begin != b.begin ? a.begin < b.begin : a.end < b.end;
    });
    std::uint64_t start = 0;  // where the next tensor must begin
    for (std::size_t k = 0; k < infos_.size(); ++k) {
      const TensorInfo& i = infos_[k];
      const std::string t = "tensor " + detail::quote_name(i.name) + ": data_offsets [" + std::to_string(i.begin) + ", " + std::to_string(i.end) + "]";
      if (i.end < i.begin) fail(t + " end before they begin");
      if (i.begin != start)
        fail(t + " should begin at " + std::to_string(start) + (k ? ", where tensor " + detail::quote_name(infos_[k - 1].name) + " ends" : ", the start of the data") +
             (i.begin > start ? " (a gap)" : " (an overlap)"));
      std::uint64_t bytes = dtype_size(i.dtype);
      for (const std::int64_t d : i.shape) {
        const auto ud = static_cast<std::uint64_t>(d);
        if (ud != 0 && bytes > UINT64_MAX / ud) fail("tensor " + detail::quote_name(i.name) + ": shape " + detail::shape_string(i.shape) + " overflows 64 bits of bytes");
        bytes *= ud;
      }
      if (bytes != i.end - i.begin)
        fail(t + " span " + std::to_string(i.end - i.begin) + " bytes, but shape " + detail::shape_string(i.shape) + " of " +
             std::string(to_string(i.dtype)) + " needs " + std::to_string(bytes));
      start = i.end;
    }
    if (start != size - data_start_)
      fail("the tensors end at byte " + std::to_string(start) + " of the data (file byte " + std::to_string(data_start_ + start) +
           "), but the file has " + std::to_string(size) + " bytes: " +
           (start < size - data_start_ ? std::to_string(size - data_start_ - start) + " bytes at the end belong to no tensor"
                                       : "the data is " + std::to_string(start - (size - data_start_)) + " bytes short (truncated?)"));
    for (std::size_t k = 0; k < infos_.size(); ++k) index_.emplace(infos_[k].name, k);
  }

  void read_metadata(const Json& value) {
    if (!value.is_object()) fail("header field __metadata__: expected object, found " + std::string(Json::kind_name(value.kind())));
    for (const auto& [k, v] : value.as_object()) {
      if (v.kind() != Json::Kind::string)
        fail("header field __metadata__." + k + ": expected string, found " + Json::kind_name(v.kind()));
      metadata_.emplace(k, v.as_string());
    }
  }

  TensorInfo read_info(const std::string& name, const Json& value) const {
    const std::string t = "tensor " + detail::quote_name(name);
    if (!value.is_object()) fail(t + ": expected an object with dtype, shape and data_offsets, found " + Json::kind_name(value.kind()));
    const auto field = [&](const char* key, Json::Kind kind) -> const Json& {
      const Json* f = value.find(key);
      if (!f) fail(t + ": header field \"" + key + "\" is missing");
      if (f->kind() != kind) fail(t + ": header field \"" + key + "\": expected " + Json::kind_name(kind) + ", found " + Json::kind_name(f->kind()));
      return *f;
    };
    // Non-negative integers; larger than int64 would have parsed as a number and fails here too.
    const auto count = [&](const Json& v, const std::string& where) {
      if (v.kind() != Json::Kind::integer || v.as_int() < 0)
        fail(t + ": " + where + ": expected a non-negative integer, found " +
             (v.kind() == Json::Kind::integer ? std::to_string(v.as_int()) : std::string(Json::kind_name(v.kind()))));
      return v.as_int();
    };
    TensorInfo info;
    info.name = name;
    const std::string& dtype = field("dtype", Json::Kind::string).as_string();
    const auto d = parse_dtype(dtype);
    if (!d) {
      std::string known;
      for (const auto& e : detail::dtype_table) known += (known.empty() ? "" : ", ") + std::string(e.name);
      fail(t + ": unknown dtype \"" + dtype + "\" (expected one of " + known + ")");
    }
    info.dtype = *d;
    const auto& shape = field("shape", Json::Kind::array).as_array();
    for (std::size_t k = 0; k < shape.size(); ++k) info.shape.push_back(count(shape[k], "shape[" + std::to_string(k) + "]"));
    const auto& offsets = field("data_offsets", Json::Kind::array).as_array();
    if (offsets.size() != 2) fail(t + ": header field \"data_offsets\": expected 2 integers [begin, end], found " + std::to_string(offsets.size()) + " elements");
    info.begin = static_cast<std::uint64_t>(count(offsets[0], "data_offsets[0]"));
    info.end = static_cast<std::uint64_t>(count(offsets[1], "data_offsets[1]"));
    return info;
  }

  ReadOnlyFile file_;
  std::vector<TensorInfo> infos_;
  std::map<std::string, std::size_t, std::less<>> index_;
  Metadata metadata_;
  std::uint64_t data_start_ = 0;
};

}  // namespace cerberus::io
