// Training state: an AdamW run saved mid-way (parameters as a checkpoint, optimizer + generator +
// user entries as a training state) and resumed in fresh objects ends bit-identical to the run
// that never stopped. Bad metadata is a FileError naming the field.
#include <cstring>
#include <map>
#include <string>
#include <vector>

#include "cerberus/cerberus.hpp"
#include "cerberus/io/checkpoint.hpp"
#include "cerberus/io/training_state.hpp"
#include "cerberus/optim/adam.hpp"
#include "io/io_support.hpp"
#include "support/catch.hpp"
#include "support/reference.hpp"

using namespace cerberus;
using testing_support::message_of;
using testing_support::TempDir;

namespace {

bool contains(const std::string& s, const std::string& part) { return s.find(part) != std::string::npos; }

nn::ParameterList<float> fresh_model() {
  Generator init(42);
  nn::ParameterList<float> params = {{"w", normal<float>({4, 3}, 0, 0.5, init)}, {"b", zeros<float>({3})}};
  for (auto& p : params) p.tensor.set_requires_grad();
  return params;
}

// One training step on a batch drawn from `data`: least squares towards a fixed linear target.
void train_step(const nn::ParameterList<float>& params, optim::AdamW<>& opt, Generator& data) {
  const Tensor<float> x = uniform<float>({8, 4}, -1, 1, data);
  const Tensor<float> target = uniform<float>({8, 3}, -1, 1, data);
  const Tensor<float> y = matmul(x, params[0].tensor) + params[1].tensor;
  const Tensor<float> err = y - target;
  const Tensor<float> loss = mean(square(err));
  opt.zero_grad();
  loss.backward();
  opt.step();
}

bool bit_equal(const Tensor<float>& a, const Tensor<float>& b) {
  const auto va = a.to_vector(), vb = b.to_vector();
  return va.size() == vb.size() && std::memcmp(va.data(), vb.data(), va.size() * sizeof(float)) == 0;
}

static_assert(io::TrainingStateOwner<optim::AdamW<>>);
static_assert(!io::TrainingStateOwner<int>);

}  // namespace

TEST_CASE("training state: save mid-run, resume in fresh objects, end bit-identical", "[io][training_state]") {
  TempDir dir;
  const std::string ckpt = dir.file("model.safetensors"), state = dir.file("train.safetensors");

  // Run A: 5 steps, save, 5 more steps.
  auto params_a = fresh_model();
  optim::AdamW<> opt_a(params_a, {.lr = 0.05, .weight_decay = 0.1});
  Generator data_a(7);
  for (int i = 0; i < 5; ++i) train_step(params_a, opt_a, data_a);
  io::save_checkpoint(ckpt, params_a);
  io::save_training_state(state, opt_a, data_a, {{"loader.epoch", "0"}, {"loader.position", "40"}});
  const std::uint64_t offset_at_save = data_a.offset();
  for (int i = 0; i < 5; ++i) train_step(params_a, opt_a, data_a);

  // Run B: fresh model, optimizer and generator (wrong seed on purpose), restored from disk.
  auto params_b = fresh_model();
  optim::AdamW<> opt_b(params_b, {.lr = 0.05, .weight_decay = 0.1});
  Generator data_b(999);
  io::load_checkpoint(ckpt, params_b);
  const auto extra = io::load_training_state(state, opt_b, data_b);
  CHECK(extra == std::map<std::string, std::string>{{"loader.epoch", "0"}, {"loader.position", "40"}});
  CHECK(opt_b.step_count() == 5);
  CHECK(data_b.seed() == 7);
  CHECK(data_b.offset() == offset_at_save);
  for (int i = 0; i < 5; ++i) train_step(params_b, opt_b, data_b);

  CHECK(opt_b.step_count() == opt_a.step_count());
  for (std::size_t i = 0; i < params_a.size(); ++i) {
    INFO(params_a[i].name);
    CHECK(bit_equal(params_a[i].tensor, params_b[i].tensor));
  }
  const auto sa = opt_a.state(), sb = opt_b.state();
  REQUIRE(sa.size() == 4);  // exp_avg and exp_avg_sq of w and b
  for (std::size_t i = 0; i < sa.size(); ++i) CHECK(bit_equal(sa[i].tensor, sb[i].tensor));

  // The file is plain safetensors with the documented metadata.
  const io::SafetensorsFile file(state);
  CHECK(file.metadata().at("format") == "cerberus.training_state");
  CHECK(file.metadata().at("step") == "5");
  CHECK(file.metadata().at("rng.seed") == "7");
  CHECK(file.metadata().at("rng.offset") == std::to_string(offset_at_save));
  CHECK(file.metadata().at("extra.loader.position") == "40");
  CHECK(file.contains("w.exp_avg_sq"));
}

TEST_CASE("training state: bad files are FileErrors naming the field; the generator is left alone", "[io][training_state]") {
  TempDir dir;
  const std::string path = dir.file("train.safetensors");
  auto params = fresh_model();
  optim::AdamW<> opt(params);
  Generator rng(3);
  rng.reserve(10);

  // A model checkpoint is not a training state.
  io::save_checkpoint(path, params);
  CHECK(message_of([&] { io::load_training_state(path, opt, rng); }) ==
        "[load_training_state] " + path + ": __metadata__.format is missing (is this a training-state file?)");

  const auto with = [&](const std::string& key, const std::string& value) {
    io::Metadata m = {{"format", "cerberus.training_state"}, {"format_version", "1"}, {"step", "2"}, {"rng.seed", "1"}, {"rng.offset", "0"}};
    m[key] = value;
    io::save_safetensors(path, {}, m);
    return message_of([&] { io::load_training_state(path, opt, rng); });
  };
  CHECK(with("step", "12x") == "[load_training_state] " + path + ": __metadata__.step: expected a non-negative decimal integer, found \"12x\"");
  CHECK(with("step", "-1") == "[load_training_state] " + path + ": __metadata__.step: expected a non-negative decimal integer, found \"-1\"");
  CHECK(contains(with("rng.seed", "18446744073709551616"), "__metadata__.rng.seed: expected a non-negative decimal integer"));
  CHECK(contains(with("rng.offset", ""), "__metadata__.rng.offset: expected a non-negative decimal integer, found \"\""));
  CHECK(contains(with("format_version", "2"), "__metadata__.format_version is \"2\"; this build reads version 1"));
  CHECK(contains(with("format", "other"), "__metadata__.format is \"other\", expected \"cerberus.training_state\""));
  // Valid metadata but no moments: AdamW's own load_state refuses, and the generator keeps its state.
  CHECK(contains(with("step", "2"), "[load_state]"));
  CHECK(rng.seed() == 3);
  CHECK(rng.offset() == 10);

  // A state tensor of another dtype is a clean dtype error.
  io::save_safetensors(path, {{"w.exp_avg", zeros<double>({4, 3})}},
                       {{"format", "cerberus.training_state"}, {"format_version", "1"}, {"step", "1"}, {"rng.seed", "1"}, {"rng.offset", "0"}});
  CHECK(contains(message_of([&] { io::load_training_state(path, opt, rng); }), "tensor 'w.exp_avg' has dtype F64, but F32 was requested"));

  // Seeds use all 64 bits.
  Generator big(~std::uint64_t{0} - 5);
  big.reserve(~std::uint64_t{0} / 3);
  io::save_training_state(path, opt, big);
  Generator back(1);
  io::load_training_state(path, opt, back);
  CHECK(back.seed() == big.seed());
  CHECK(back.offset() == big.offset());
}
