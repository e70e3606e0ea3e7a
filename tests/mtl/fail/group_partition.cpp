// Compile-fail: groups that do not partition the tasks ("b" is in no group, "a" in two).
#include "cerberus/mtl.hpp"
#include "cerberus/mtl/weighting/static.hpp"
#include "cerberus/nn/stacks.hpp"

using namespace cerberus;

using M = mtl::Model<nn::Encoder<>, mtl::Soft<0.01, mtl::Group<"u", "a">, mtl::Group<"g", "a", "c">>, mtl::Equal,
                     mtl::Task<"a", mtl::SequenceClassifier<2>>, mtl::Task<"b", mtl::LMHead<>>, mtl::Task<"c", mtl::Regression<>>>;
int main() { return sizeof(M) > 0 ? 0 : 1; }
