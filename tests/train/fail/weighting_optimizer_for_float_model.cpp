// A float model with Uncertainty given a weighting optimizer: its trainable_parameters() hold them already.
#include "cerberus/cerberus.hpp"
#include "cerberus/mtl.hpp"
#include "cerberus/mtl/weighting.hpp"
#include "cerberus/train/trainer.hpp"
using namespace cerberus;
using M = mtl::Model<nn::Encoder<float>, mtl::Hard, mtl::Uncertainty, mtl::Task<"a", mtl::SequenceClassifier<2, mtl::Pooling::first>>>;
struct Src { mtl::Batch<float> next() { return {}; } void save_state(std::map<std::string, std::string>&) const {} void restore_state(const std::map<std::string, std::string>&) {} };
int main() {
  Generator gen(1);
  M m(nn::Encoder<float>(nn::TransformerConfig{}, gen), gen, mtl::Uncertainty(1));
  optim::AdamW opt(m.trainable_parameters());
  optim::AdamW<cpu, float> w(m.weighting_parameters());
  Src src;
  train::Trainer t(m, opt, w, optim::ConstantLr(1e-3), src, nullptr, train::TrainerOptions{});
}
