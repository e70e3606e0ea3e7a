// Compile-fail: a head that needs 64-wide hidden states on a trunk that promises 32.
#include "cerberus/mtl.hpp"
#include "cerberus/mtl/weighting/static.hpp"
#include "cerberus/nn/stacks.hpp"

using namespace cerberus;

struct Trunk32 : nn::Encoder<float> {
  static constexpr Index hidden_width = 32;
  using nn::Encoder<float>::Encoder;
};
struct Wide64 : mtl::TokenClassifier<3> {
  static constexpr Index input_width = 64;
  using mtl::TokenClassifier<3>::TokenClassifier;
};
using M = mtl::Model<Trunk32, mtl::Hard, mtl::Equal, mtl::Task<"tags", Wide64>>;
int main() { return sizeof(M) > 0 ? 0 : 1; }
