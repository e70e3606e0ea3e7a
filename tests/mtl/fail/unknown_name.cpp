// Compile-fail: head<"name">() with a name that is no task.
#include "cerberus/mtl.hpp"
#include "cerberus/mtl/weighting/static.hpp"
#include "cerberus/nn/stacks.hpp"

using namespace cerberus;

using M = mtl::Model<nn::Encoder<>, mtl::Hard, mtl::Equal, mtl::Task<"sentiment", mtl::SequenceClassifier<2>>>;
void f(M& m) { m.head<"topic">(); }
int main() {}
