// Checkpoints: round trips into existing (and non-contiguous) parameter tensors, one error that
// lists every mismatch, explicit F32 <-> BF16 conversion, and atomic saves: a save that fails
// mid-write, or a process that dies mid-write, leaves the previous checkpoint loadable and
// byte-identical.
#include <csignal>
#include <filesystem>
#include <string>
#include <vector>

#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include "cerberus/cerberus.hpp"
#include "cerberus/io/checkpoint.hpp"
#include "io/io_support.hpp"
#include "support/catch.hpp"
#include "support/reference.hpp"

using namespace cerberus;
using testing_support::message_of;
using testing_support::random_uniform;
using testing_support::read_bytes;
using testing_support::TempDir;

namespace {

bool contains(const std::string& s, const std::string& part) { return s.find(part) != std::string::npos; }

template <class T>
bool same_values(const Tensor<T>& a, const Tensor<T>& b) {
  if (!(a.shape() == b.shape())) return false;
  const auto va = a.to_vector(), vb = b.to_vector();
  for (std::size_t i = 0; i < va.size(); ++i)
    if (static_cast<float>(va[i]) != static_cast<float>(vb[i])) return false;
  return true;
}

// A small model: two dense tensors and one transposed view (a parameter that is not contiguous).
nn::ParameterList<float> model(std::uint64_t seed) {
  const auto head_storage = random_uniform<float>({2, 4}, -1, 1, seed + 2);
  nn::ParameterList<float> params = {
      {"enc.w", random_uniform<float>({4, 3}, -1, 1, seed)},
      {"enc.b", random_uniform<float>({3}, -1, 1, seed + 1)},
      {"head.w", head_storage.t()},  // [4, 2] view with strides [1, 4]
  };
  for (auto& p : params) p.tensor.set_requires_grad();
  return params;
}

std::vector<Tensor<float>> snapshot(const nn::ParameterList<float>& params) {
  std::vector<Tensor<float>> out;
  for (const auto& p : params) out.push_back(p.tensor.detach().clone());
  return out;
}

// Runs `child` in a forked process and returns its exit status (or -1 if it did not exit).
template <class F>
int in_child(F child) {
  const pid_t pid = ::fork();
  if (pid == 0) {
    int code = 99;
    try {
      code = child();
    } catch (...) {
      code = 98;
    }
    ::_exit(code);  // never return into Catch in the child
  }
  int status = 0;
  ::waitpid(pid, &status, 0);
  return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

}  // namespace

TEST_CASE("checkpoint: round trip into the existing parameter tensors, views included", "[io][checkpoint]") {
  TempDir dir;
  const std::string path = dir.file("model.safetensors");
  const auto saved = model(1);
  io::save_checkpoint(path, saved, {{"epoch", "3"}});

  const auto target = model(100);  // different values, same names and shapes
  const float* storage_before = target[2].tensor.data();
  const auto metadata = io::load_checkpoint(path, target);
  CHECK(metadata.at("epoch") == "3");
  for (std::size_t i = 0; i < saved.size(); ++i) {
    INFO(saved[i].name);
    CHECK(same_values(target[i].tensor, saved[i].tensor));
  }
  CHECK(target[2].tensor.data() == storage_before);  // copied in place: optimizers keep their pointers
  CHECK_FALSE(target[2].tensor.is_contiguous());
  CHECK(target[0].tensor.requires_grad());
}

TEST_CASE("checkpoint: every mismatch is reported at once, one per line, and nothing is loaded", "[io][checkpoint]") {
  TempDir dir;
  const std::string path = dir.file("other.safetensors");
  io::save_safetensors(path, {
                                 {"enc.w", zeros<float>({3, 4})},       // shape mismatch
                                 {"enc.b", zeros<bfloat16>({3})},       // dtype mismatch (convertible)
                                 {"old.proj", zeros<float>({5})},       // unexpected
                                 {"head.w", zeros<double>({4, 2})},     // dtype mismatch (not convertible)
                             });
  const auto target = model(7);
  const auto before = snapshot(target);
  const std::string message = message_of([&] { io::load_checkpoint(path, target); });
  CHECK(message ==
        "[load_checkpoint] " + path + " does not match the model (4 problems; nothing was loaded):\n"
        "  shape mismatch: 'enc.w' is [3, 4] in the file, [4, 3] in the model\n"
        "  dtype mismatch: 'enc.b' is BF16 in the file, F32 in the model (set LoadOptions::convert_bfloat16 to convert)\n"
        "  dtype mismatch: 'head.w' is F64 in the file, F32 in the model\n"
        "  unexpected in the file: 'old.proj' (shape [5], F32), not a parameter of the model");
  for (std::size_t i = 0; i < target.size(); ++i) CHECK(same_values(target[i].tensor, before[i]));

  // A missing name is listed too, and the error is a FileError.
  io::save_safetensors(path, {{"enc.w", zeros<float>({4, 3})}});
  CHECK_THROWS_AS(io::load_checkpoint(path, target), FileError);
  const std::string missing = message_of([&] { io::load_checkpoint(path, target); });
  CHECK(contains(missing, "(2 problems; nothing was loaded):\n  missing in the file: 'enc.b' (the model has shape [3], F32)\n"
                          "  missing in the file: 'head.w' (the model has shape [4, 2], F32)"));
}

TEST_CASE("checkpoint: strict = false skips missing and unexpected names but not wrong shapes", "[io][checkpoint]") {
  TempDir dir;
  const std::string path = dir.file("partial.safetensors");
  const auto source = random_uniform<float>({4, 3}, -1, 1, 11);
  io::save_safetensors(path, {{"enc.w", source}, {"extra", zeros<float>({2})}});
  const auto target = model(5);
  const auto before = snapshot(target);
  io::load_checkpoint(path, target, {.strict = false});
  CHECK(same_values(target[0].tensor, source));
  CHECK(same_values(target[1].tensor, before[1]));  // absent from the file: untouched
  CHECK(same_values(target[2].tensor, before[2]));

  io::save_safetensors(path, {{"enc.w", zeros<float>({2, 6})}});
  CHECK(contains(message_of([&] { io::load_checkpoint(path, target, {.strict = false}); }),
                 "(1 problem; nothing was loaded):\n  shape mismatch: 'enc.w' is [2, 6] in the file, [4, 3] in the model"));
}

TEST_CASE("checkpoint: F32 <-> BF16 only when asked for", "[io][checkpoint]") {
  TempDir dir;
  const std::string path = dir.file("bf16.safetensors");
  const auto saved = model(21);
  io::save_checkpoint(path, saved, {}, io::StoreAs::bfloat16);
  const io::SafetensorsFile file(path);
  for (const auto& info : file.tensors()) CHECK(info.dtype == io::Dtype::BF16);

  const auto target = model(22);
  CHECK(contains(message_of([&] { io::load_checkpoint(path, target); }), "(3 problems; nothing was loaded)"));
  io::load_checkpoint(path, target, {.convert_bfloat16 = true});
  for (std::size_t i = 0; i < saved.size(); ++i) {
    const Tensor<float> rounded = saved[i].tensor.detach().to<bfloat16>().to<float>();
    CHECK(same_values(target[i].tensor, rounded));
    CHECK_FALSE(same_values(target[i].tensor, saved[i].tensor));  // BF16 really lost bits
  }

  // The other direction: a bfloat16 model from an F32 checkpoint.
  const std::string f32 = dir.file("f32.safetensors");
  io::save_checkpoint(f32, saved);
  nn::ParameterList<bfloat16> half = {{"enc.w", zeros<bfloat16>({4, 3})}, {"enc.b", zeros<bfloat16>({3})}, {"head.w", zeros<bfloat16>({4, 2})}};
  CHECK(contains(message_of([&] { io::load_checkpoint(f32, half); }), "dtype mismatch: 'enc.w' is F32 in the file, BF16 in the model"));
  io::load_checkpoint(f32, half, {.convert_bfloat16 = true});
  CHECK(same_values(half[0].tensor, saved[0].tensor.detach().to<bfloat16>()));

  nn::ParameterList<double> wide = {{"x", zeros<double>({2})}};
  CHECK_THROWS_AS(io::save_checkpoint(dir.file("d.safetensors"), wide, {}, io::StoreAs::bfloat16), ValueError);
  CHECK_NOTHROW(io::load_checkpoint(f32, wide, {.strict = false}));  // no shared names: nothing to load, nothing wrong
  CHECK(wide[0].tensor.to_vector() == std::vector<double>{0, 0});
  nn::ParameterList<float> twice = {{"a", zeros<float>({1})}, {"a", zeros<float>({1})}};
  CHECK(message_of([&] { io::save_checkpoint(f32, twice); }) == "[save_checkpoint] parameter name 'a' appears twice (entries 0 and 1)");
}

TEST_CASE("checkpoint: failed saves leave the previous checkpoint loadable and identical", "[io][checkpoint]") {
  TempDir dir;
  const std::string path = dir.file("ckpt.safetensors");
  const auto good = model(31);
  io::save_checkpoint(path, good, {{"version", "good"}});
  const std::string good_bytes = read_bytes(path);
  const auto still_good = [&] {
    if (read_bytes(path) != good_bytes) return false;
    const auto target = model(32);
    io::load_checkpoint(path, target);
    return same_values(target[0].tensor, good[0].tensor) && same_values(target[2].tensor, good[2].tensor);
  };
  const auto temp_files = [&] {
    int n = 0;
    for (const auto& e : std::filesystem::directory_iterator(dir.path()))
      if (contains(e.path().filename().string(), ".tmp.")) ++n;
    return n;
  };
  nn::ParameterList<float> big = {{"enc.w", random_uniform<float>({1000, 100}, -1, 1, 33)}};

  SECTION("an invalid parameter list is refused before any file is touched") {
    nn::ParameterList<float> broken = {{"enc.w", zeros<float>({4, 3})}, {"enc.b", Tensor<float>()}};
    CHECK(contains(message_of([&] { io::save_checkpoint(path, broken); }), "parameter 'enc.b' is undefined"));
    CHECK(still_good());
    CHECK(temp_files() == 0);
  }

  SECTION("a write error in the middle (file size limit) removes the temporary file") {
    // The child may write at most 4 KiB per file: the 400 KB save fails part-way through.
    const int status = in_child([&] {
      ::signal(SIGXFSZ, SIG_IGN);  // EFBIG from write() instead of death
      const rlimit limit{4096, 4096};
      if (::setrlimit(RLIMIT_FSIZE, &limit) != 0) return 10;
      try {
        io::save_checkpoint(path, big);
      } catch (const FileError& e) {
        if (!contains(e.what(), "File too large") || !contains(e.what(), "the previous file, if any, is untouched")) return 11;
        return std::filesystem::exists(path + ".tmp." + std::to_string(::getpid())) ? 12 : 0;
      }
      return 13;  // the save should not have succeeded
    });
    CHECK(status == 0);
    CHECK(still_good());
    CHECK(temp_files() == 0);
  }

  SECTION("a process killed mid-write leaves only a stray temporary file") {
    // The child takes the real save path (AtomicFile), writes half of a 3 MiB file (large writes
    // go straight to the file) and dies without cleanup.
    const std::string new_bytes(3 << 20, 'x');
    const int status = in_child([&] {
      io::AtomicFile file(path, "crash");
      file.write(new_bytes.data(), new_bytes.size() / 2);
      ::_exit(0);  // no destructor, no commit: as if killed
      return 1;
    });
    CHECK(status == 0);
    CHECK(still_good());
    REQUIRE(temp_files() == 1);  // the half-written temp is there, beside the untouched target
    for (const auto& e : std::filesystem::directory_iterator(dir.path())) {
      if (!contains(e.path().filename().string(), "ckpt.safetensors.tmp.")) continue;
      CHECK(std::filesystem::file_size(e.path()) == new_bytes.size() / 2);
      CHECK(e.path().extension().string() != "." + std::to_string(::getpid()));  // named after the child
    }
  }

  SECTION("an unwritable destination fails cleanly") {
    CHECK(contains(message_of([&] { io::save_checkpoint(dir.file("missing/dir/ckpt.safetensors"), good); }), "cannot write"));
    CHECK(still_good());
  }

  SECTION("a successful save replaces the file and leaves no temporary file") {
    io::save_checkpoint(path, big, {{"version", "new"}});
    CHECK(io::SafetensorsFile(path).metadata().at("version") == "new");
    CHECK(temp_files() == 0);
  }
}
