// safetensors: byte-exact layout against a file built by hand the way the reference writer lays
// it out, round trips of every dtype (bf16 bit patterns, rank 0, empty), and the malformed-file
// battery: every truncation, every corrupted header field, and byte fuzzing of the header must be
// a clean FileError that names the file, never a crash or an over-read (also run under ASan).
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <string>
#include <vector>

#include "cerberus/cerberus.hpp"
#include "cerberus/io/safetensors.hpp"
#include "io/io_support.hpp"
#include "support/catch.hpp"
#include "support/reference.hpp"

using namespace cerberus;
using io::NamedTensor;
using io::SafetensorsFile;
using testing_support::message_of;
using testing_support::read_bytes;
using testing_support::TempDir;
using testing_support::write_bytes;

namespace {

template <class T>
std::string raw(const std::vector<T>& values) {
  return std::string(reinterpret_cast<const char*>(values.data()), values.size() * sizeof(T));
}
std::string le64(std::uint64_t n) {
  std::string s(8, '\0');
  for (int i = 0; i < 8; ++i) s[static_cast<std::size_t>(i)] = static_cast<char>(n >> (8 * i));
  return s;
}
// [N][header padded with spaces to 8][data], as the reference writer frames a file.
std::string frame(std::string header, const std::string& data) {
  header.append((8 - header.size() % 8) % 8, ' ');
  return le64(header.size()) + header + data;
}
template <class T>
bool same_bits(const Tensor<T>& a, const Tensor<T>& b) {
  if (!(a.shape() == b.shape())) return false;
  const auto va = a.to_vector(), vb = b.to_vector();
  return va.size() == vb.size() && (va.empty() || std::memcmp(va.data(), vb.data(), va.size() * sizeof(T)) == 0);
}
// The FileError message of opening `path` and reading every tensor, or "(ok)". Any other
// exception type fails the test: malformed files must surface as FileError.
std::string open_error(const std::string& path) {
  try {
    SafetensorsFile f(path);
    for (const auto& info : f.tensors()) {
      switch (info.dtype) {
        case io::Dtype::F32: f.tensor<float>(info.name); break;
        case io::Dtype::F64: f.tensor<double>(info.name); break;
        case io::Dtype::BF16: f.tensor<bfloat16>(info.name); break;
        case io::Dtype::I64: f.tensor<std::int64_t>(info.name); break;
        case io::Dtype::I32: f.tensor<std::int32_t>(info.name); break;
        case io::Dtype::U8: f.tensor<std::uint8_t>(info.name); break;
        default: break;
      }
    }
  } catch (const FileError& e) {
    return e.what();
  }
  return "(ok)";
}
bool contains(const std::string& s, const std::string& part) { return s.find(part) != std::string::npos; }

// The file of the byte-exact test: every cerberus dtype, a rank-0 and an empty tensor, a
// non-contiguous input and metadata.
std::vector<NamedTensor> sample_tensors() {
  const auto b16 = [](std::vector<std::uint16_t> bits, const Shape& shape) {
    std::vector<bfloat16> v;
    for (auto b : bits) v.push_back(bfloat16::from_bits(b));
    return from_vector<bfloat16>(v, shape);
  };
  return {
      {"a", from_vector<float>({0.5f, 2.0f, -1.0f, 3.25f}, {2, 2}).t()},  // transposed view: written as [[0.5, -1], [2, 3.25]]
      {"u", from_vector<std::uint8_t>({0, 7, 255}, {3})},
      {"c", b16({0x3FC0}, {})},                           // rank 0: 1.5
      {"e", b16({0x7FC1, 0x8000, 0x0001}, {3})},          // NaN with payload, -0, smallest subnormal
      {"b", from_vector<std::int64_t>({1, -2}, {2})},
      {"d", from_vector<double>({}, {0, 3})},             // empty
      {"i", from_vector<std::int32_t>({-7, 1 << 30}, {2})},
  };
}

}  // namespace

TEST_CASE("safetensors: the file is byte for byte what the reference writer produces", "[io][safetensors]") {
  TempDir dir;
  const std::string path = dir.file("sample.safetensors");
  io::save_safetensors(path, sample_tensors(), {{"z", "last"}, {"format", "pt"}});

  // Sorted by dtype alignment (I64 > F64 > F32 > I32 > BF16 > U8), then by name; __metadata__
  // first with sorted keys; serde_json's compact layout; offsets relative to the data.
  const std::string header =
      R"({"__metadata__":{"format":"pt","z":"last"},)"
      R"("b":{"dtype":"I64","shape":[2],"data_offsets":[0,16]},)"
      R"("d":{"dtype":"F64","shape":[0,3],"data_offsets":[16,16]},)"
      R"("a":{"dtype":"F32","shape":[2,2],"data_offsets":[16,32]},)"
      R"("i":{"dtype":"I32","shape":[2],"data_offsets":[32,40]},)"
      R"("c":{"dtype":"BF16","shape":[],"data_offsets":[40,42]},)"
      R"("e":{"dtype":"BF16","shape":[3],"data_offsets":[42,48]},)"
      R"("u":{"dtype":"U8","shape":[3],"data_offsets":[48,51]}})";
  const std::string data = raw<std::int64_t>({1, -2}) + raw<float>({0.5f, -1.0f, 2.0f, 3.25f}) + raw<std::int32_t>({-7, 1 << 30}) +
                           raw<std::uint16_t>({0x3FC0, 0x7FC1, 0x8000, 0x0001}) + raw<std::uint8_t>({0, 7, 255});
  const std::string expected = frame(header, data);
  const std::string actual = read_bytes(path);
  CHECK(actual.size() == expected.size());
  CHECK(actual == expected);
  const std::size_t pad = (8 - header.size() % 8) % 8;
  CHECK(pad > 0);  // this header needs padding, so the test sees it
  CHECK(actual.substr(8 + header.size(), pad) == std::string(pad, ' '));
  CHECK((actual.size() - 51) % 8 == 0);  // 51 data bytes after an 8-aligned header

  // No tensors, no metadata: "{}" padded to 8 bytes.
  io::save_safetensors(dir.file("empty.safetensors"), {});
  CHECK(read_bytes(dir.file("empty.safetensors")) == std::string("\x08\0\0\0\0\0\0\0{}      ", 16));
  const SafetensorsFile empty(dir.file("empty.safetensors"));
  CHECK(empty.tensors().empty());
  CHECK(empty.metadata().empty());
}

TEST_CASE("safetensors: every dtype round-trips bit for bit, with names, shapes and metadata", "[io][safetensors]") {
  TempDir dir;
  const std::string path = dir.file("rt.safetensors");
  const auto in = sample_tensors();
  auto f32 = testing_support::random_uniform<float>({300, 1000}, -1, 1, 7);  // > 1 MiB: bypasses the write buffer
  auto f64 = testing_support::random_uniform<double>({3, 1, 4}, -1e300, 1e300, 8);
  auto all = in;
  all.push_back({"big.f32", f32});
  all.push_back({"wide.f64", f64});
  io::save_safetensors(path, all, {{"step", "12"}, {"note", "caf\xC3\xA9 \"quoted\"\n"}});

  const SafetensorsFile f(path);
  CHECK(f.names() == std::vector<std::string>{"b", "d", "wide.f64", "a", "big.f32", "i", "c", "e", "u"});
  CHECK(f.metadata().at("note") == "caf\xC3\xA9 \"quoted\"\n");
  CHECK(f.metadata().at("step") == "12");
  CHECK(f.data_start() % 8 == 0);
  CHECK(f.info("c").shape.empty());
  CHECK(f.info("d").shape == std::vector<std::int64_t>{0, 3});
  CHECK(same_bits(f.tensor<float>("big.f32"), f32));
  CHECK(same_bits(f.tensor<double>("wide.f64"), f64));
  CHECK(same_bits(f.tensor<float>("a"), std::get<Tensor<float>>(in[0].tensor).contiguous()));
  CHECK(same_bits(f.tensor<std::uint8_t>("u"), std::get<Tensor<std::uint8_t>>(in[1].tensor)));
  CHECK(same_bits(f.tensor<bfloat16>("c"), std::get<Tensor<bfloat16>>(in[2].tensor)));
  CHECK(f.tensor<bfloat16>("c").rank() == 0);
  CHECK(same_bits(f.tensor<bfloat16>("e"), std::get<Tensor<bfloat16>>(in[3].tensor)));
  CHECK(same_bits(f.tensor<std::int64_t>("b"), std::get<Tensor<std::int64_t>>(in[4].tensor)));
  CHECK(f.tensor<double>("d").shape() == Shape{0, 3});
  CHECK(same_bits(f.tensor<std::int32_t>("i"), std::get<Tensor<std::int32_t>>(in[6].tensor)));

  // Asking for another dtype or an absent name is an error naming the file and the tensor.
  CHECK(message_of([&] { f.tensor<double>("a"); }) == "[safetensors] " + path + ": tensor 'a' has dtype F32, but F64 was requested");
  CHECK(contains(message_of([&] { f.tensor<float>("nope"); }), path + ": no tensor named 'nope' (the file has 9: 'b', 'd', 'wide.f64'"));
}

TEST_CASE("safetensors: the writer refuses what it cannot write faithfully", "[io][safetensors]") {
  TempDir dir;
  const std::string path = dir.file("w.safetensors");
  const auto t = zeros<float>({2});
  CHECK(message_of([&] { io::save_safetensors(path, {{"x", t}, {"x", t}}); }) == "[save_safetensors] " + path + ": tensor 'x' appears twice");
  CHECK(contains(message_of([&] { io::save_safetensors(path, {{"__metadata__", t}}); }), "reserved for the metadata"));
  CHECK(contains(message_of([&] { io::save_safetensors(path, {{"x", Tensor<float>()}}); }), "tensor 'x' is undefined"));
  CHECK(contains(message_of([&] { io::save_safetensors(path, {{"bad\xFF", t}}); }), "not valid UTF-8"));
  CHECK_FALSE(std::filesystem::exists(path));
  CHECK(contains(message_of([&] { io::save_safetensors(dir.file("no/such/dir.safetensors"), {{"x", t}}); }), "cannot write"));
}

TEST_CASE("safetensors: a file truncated at any byte is a clean error", "[io][safetensors]") {
  TempDir dir;
  const std::string good = dir.file("good.safetensors"), cut = dir.file("cut.safetensors");
  io::save_safetensors(good, sample_tensors(), {{"k", "v"}});
  const std::string bytes = read_bytes(good);
  REQUIRE(open_error(good) == "(ok)");
  for (std::size_t n = 0; n < bytes.size(); ++n) {
    write_bytes(cut, bytes.substr(0, n));
    const std::string e = open_error(cut);
    INFO("truncated to " << n << " bytes: " << e);
    CHECK(contains(e, "[safetensors] " + cut + ": "));
  }
  write_bytes(cut, bytes + "x");  // one byte too many is as wrong as one too few
  CHECK(contains(open_error(cut), "1 bytes at the end belong to no tensor"));
  write_bytes(cut, bytes.substr(0, bytes.size() - 1));
  CHECK(contains(open_error(cut), "the data is 1 bytes short (truncated?)"));
  write_bytes(cut, "abc");
  CHECK(contains(open_error(cut), "the file has 3 bytes; expected at least 8"));
}

TEST_CASE("safetensors: every corrupted header field is a clean error saying what was expected", "[io][safetensors]") {
  TempDir dir;
  const std::string p = dir.file("bad.safetensors");
  const auto err = [&](const std::string& header, std::size_t data_bytes) {
    write_bytes(p, frame(header, std::string(data_bytes, '\0')));
    return open_error(p);
  };
  const auto one = [](const std::string& body) { return R"({"w":{)" + body + "}}"; };
  const std::string pre = "[safetensors] " + p + ": ";

  // Header length field.
  write_bytes(p, le64(0) + std::string(8, ' '));
  CHECK(open_error(p) == pre + "expected the header to start with '{' at byte 8, found an empty header");
  write_bytes(p, le64(100) + "{}      ");
  CHECK(open_error(p) == pre + "header length 100 (bytes 0..8) runs past the end of the file: the header would end at byte 108 but the file has 16 bytes");
  write_bytes(p, le64(~std::uint64_t{0}) + "{}      ");
  CHECK(contains(open_error(p), "exceeds the limit of 100000000 bytes"));
  write_bytes(p, le64(100'000'001) + "{}      ");
  CHECK(contains(open_error(p), "header length 100000001 (bytes 0..8) exceeds the limit"));

  // Not JSON, or not the expected JSON.
  CHECK(err("[1]", 0) == pre + "expected the header to start with '{' at byte 8, found '['");
  CHECK(err(R"({"w": nope})", 0) == pre + "header JSON at byte 15 (header line 1, column 8): expected 'null', found 'o'");
  CHECK(err(R"({"w":{}} junk)", 0) == pre + "header JSON at byte 17 (header line 1, column 10): expected end of input, found 'j'");
  CHECK(contains(err("{\"\xFF\":{}}", 0), "expected valid UTF-8, found byte 0xFF"));
  CHECK(contains(err(R"({"w":)" + std::string(300, '[') + std::string(300, ']') + "}", 0), "nested arrays and objects"));
  CHECK(err(R"({"w":[1]})", 0) == pre + "tensor 'w': expected an object with dtype, shape and data_offsets, found array");
  CHECK(err(R"({"__metadata__":[]})", 0) == pre + "header field __metadata__: expected object, found array");
  CHECK(err(R"({"__metadata__":{"step":12}})", 0) == pre + "header field __metadata__.step: expected string, found integer");

  // Fields of a tensor entry.
  CHECK(err(one(R"("shape":[1],"data_offsets":[0,4])"), 4) == pre + "tensor 'w': header field \"dtype\" is missing");
  CHECK(err(one(R"("dtype":"F32","data_offsets":[0,4])"), 4) == pre + "tensor 'w': header field \"shape\" is missing");
  CHECK(err(one(R"("dtype":"F32","shape":[1])"), 4) == pre + "tensor 'w': header field \"data_offsets\" is missing");
  CHECK(err(one(R"("dtype":32,"shape":[1],"data_offsets":[0,4])"), 4) == pre + "tensor 'w': header field \"dtype\": expected string, found integer");
  CHECK(contains(err(one(R"("dtype":"F17","shape":[1],"data_offsets":[0,4])"), 4), "tensor 'w': unknown dtype \"F17\" (expected one of BOOL, U8,"));
  CHECK(err(one(R"("dtype":"F32","shape":[-1],"data_offsets":[0,4])"), 4) == pre + "tensor 'w': shape[0]: expected a non-negative integer, found -1");
  CHECK(err(one(R"("dtype":"F32","shape":[1.0],"data_offsets":[0,4])"), 4) == pre + "tensor 'w': shape[0]: expected a non-negative integer, found number");
  CHECK(err(one(R"("dtype":"F32","shape":[1],"data_offsets":[-4,4])"), 4) == pre + "tensor 'w': data_offsets[0]: expected a non-negative integer, found -4");
  CHECK(err(one(R"("dtype":"F32","shape":[1],"data_offsets":[0,4,8])"), 4) == pre + "tensor 'w': header field \"data_offsets\": expected 2 integers [begin, end], found 3 elements");
  CHECK(err(one(R"("dtype":"F32","shape":[1],"data_offsets":[0,18446744073709551616])"), 4) ==
        pre + "tensor 'w': data_offsets[1]: expected a non-negative integer, found number");

  // Offsets against each other, the shapes and the file.
  CHECK(err(one(R"("dtype":"F32","shape":[3],"data_offsets":[0,8])"), 8) ==
        pre + "tensor 'w': data_offsets [0, 8] span 8 bytes, but shape [3] of F32 needs 12");
  CHECK(err(one(R"("dtype":"F32","shape":[1],"data_offsets":[4,0])"), 4) == pre + "tensor 'w': data_offsets [4, 0] end before they begin");
  CHECK(err(one(R"("dtype":"F32","shape":[1],"data_offsets":[4,8])"), 8) ==
        pre + "tensor 'w': data_offsets [4, 8] should begin at 0, the start of the data (a gap)");
  CHECK(err(R"({"a":{"dtype":"F32","shape":[4],"data_offsets":[0,16]},"b":{"dtype":"F32","shape":[4],"data_offsets":[8,24]}})", 24) ==
        pre + "tensor 'b': data_offsets [8, 24] should begin at 16, where tensor 'a' ends (an overlap)");
  CHECK(err(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[2],"data_offsets":[12,20]}})", 20) ==
        pre + "tensor 'b': data_offsets [12, 20] should begin at 8, where tensor 'a' ends (a gap)");
  CHECK(contains(err(one(R"("dtype":"F32","shape":[1],"data_offsets":[0,4])"), 2), "the tensors end at byte 4 of the data"));
  CHECK(contains(err(one(R"("dtype":"F32","shape":[1],"data_offsets":[0,4])"), 2), "the data is 2 bytes short (truncated?)"));
  CHECK(err(one(R"("dtype":"U8","shape":[4294967296,4294967296],"data_offsets":[0,0])"), 0) ==
        pre + "tensor 'w': shape [4294967296, 4294967296] overflows 64 bits of bytes");
  CHECK(contains(err(R"({"w":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"w":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}})", 8),
                 "expected a unique key, found a second \"w\""));

  // Dtypes the format knows but cerberus does not hold open fine and refuse only on read.
  write_bytes(p, frame(R"({"h":{"dtype":"F16","shape":[2],"data_offsets":[0,4]}})", std::string(4, '\0')));
  const SafetensorsFile f16(p);
  CHECK(f16.info("h").dtype == io::Dtype::F16);
  CHECK(message_of([&] { f16.tensor<float>("h"); }) == pre + "tensor 'h': unsupported dtype F16 (cerberus reads F32, F64, BF16, I64, I32 and U8)");
  // A rank the Shape cannot hold is valid safetensors but not loadable here.
  write_bytes(p, frame(R"({"r":{"dtype":"U8","shape":[1,1,1,1,1,1,1,1,1],"data_offsets":[0,1]}})", std::string(1, '\0')));
  CHECK(open_error(p) == pre + "tensor 'r' has rank 9; cerberus tensors have at most 8");
  // Offsets given out of order in the header are fine: they are sorted, as the reference does.
  write_bytes(p, frame(R"({"b":{"dtype":"U8","shape":[1],"data_offsets":[1,2]},"a":{"dtype":"U8","shape":[1],"data_offsets":[0,1]}})", "\x05\x06"));
  CHECK(SafetensorsFile(p).tensor<std::uint8_t>("b").item() == 6);
}

TEST_CASE("safetensors: byte fuzzing of the header never crashes and only ever throws FileError", "[io][safetensors]") {
  TempDir dir;
  const std::string good = dir.file("good.safetensors"), bad = dir.file("fuzz.safetensors");
  io::save_safetensors(good, sample_tensors(), {{"k", "v"}});
  const std::string bytes = read_bytes(good);
  const SafetensorsFile reference(good);
  const std::size_t header_end = static_cast<std::size_t>(reference.data_start());
  int opened = 0, refused = 0;
  for (std::size_t i = 0; i < header_end; ++i) {
    for (const unsigned char v : {0x00, 0x01, 0x20, 0x22, 0x2C, 0x2D, 0x30, 0x39, 0x5B, 0x5D, 0x7B, 0x7D, 0x80, 0xFF}) {
      std::string mutated = bytes;
      mutated[i] = static_cast<char>(v);
      if (mutated == bytes) continue;
      write_bytes(bad, mutated);
      const std::string e = open_error(bad);  // a non-FileError exception escapes and fails the test
      if (e == "(ok)") {
        ++opened;
      } else {
        ++refused;
        CHECK(contains(e, bad));
      }
    }
  }
  CHECK(refused > 0);
  INFO("opened " << opened << ", refused " << refused);
  // Changing a digit of an offset or a name can keep a file valid; most changes must not.
  CHECK(refused > 10 * opened);
}

TEST_CASE("safetensors: a file shortened after it was opened is a clean read error", "[io][safetensors]") {
  TempDir dir;
  const std::string path = dir.file("shrink.safetensors");
  io::save_safetensors(path, {{"w", testing_support::random_uniform<float>({64}, 0, 1, 3)}});
  const SafetensorsFile f(path);
  std::filesystem::resize_file(path, f.data_start() + 10);
  CHECK(contains(message_of([&] { f.tensor<float>("w"); }), path + ": file ended at byte " + std::to_string(f.data_start() + 10) + " while reading tensor 'w'"));
}
