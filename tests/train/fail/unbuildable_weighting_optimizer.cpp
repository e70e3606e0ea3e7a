// A bf16 model with Uncertainty and an optimizer type the Trainer cannot rebuild over float parameters.
#include "cerberus/cerberus.hpp"
#include "cerberus/mtl.hpp"
#include "cerberus/mtl/weighting.hpp"
#include "cerberus/train/trainer.hpp"
using namespace cerberus;
using M = mtl::Model<nn::Encoder<bfloat16>, mtl::Hard, mtl::Uncertainty, mtl::Task<"a", mtl::SequenceClassifier<2, mtl::Pooling::first, bfloat16>>>;
struct MyOpt {  // no options(), not O<D, P>
  void zero_grad() {} void step() {} void set_lr(double) {} std::int64_t step_count() const { return 0; }
  nn::ParameterList<float> state() const { return {}; } void load_state(const nn::ParameterList<float>&, std::int64_t) {}
};
struct Src { mtl::Batch<float> next() { return {}; } void save_state(std::map<std::string, std::string>&) const {} void restore_state(const std::map<std::string, std::string>&) {} };
int main() {
  Generator gen(1);
  M m(nn::Encoder<bfloat16>(nn::TransformerConfig{}, gen), gen, mtl::Uncertainty(1));
  MyOpt opt; Src src;
  train::Trainer t(m, opt, optim::ConstantLr(1e-3), src, nullptr, train::TrainerOptions{});
}
