// A weighting with save_state but no restore_state.
#include "cerberus/cerberus.hpp"
#include "cerberus/mtl.hpp"
#include "cerberus/mtl/weighting.hpp"
#include "cerberus/train/trainer.hpp"
using namespace cerberus;
struct Half : mtl::Equal { void save_state(mtl::WeightingState&, const std::string&) const {} };
using M = mtl::Model<nn::Encoder<float>, mtl::Hard, Half, mtl::Task<"a", mtl::SequenceClassifier<2, mtl::Pooling::first>>>;
struct Src { mtl::Batch<float> next() { return {}; } void save_state(std::map<std::string, std::string>&) const {} void restore_state(const std::map<std::string, std::string>&) {} };
int main() {
  Generator gen(1);
  M m(nn::Encoder<float>(nn::TransformerConfig{}, gen), gen, Half{});
  optim::AdamW opt(m.trainable_parameters());
  Src src;
  train::Trainer t(m, opt, optim::ConstantLr(1e-3), src, nullptr, train::TrainerOptions{});
}
