// Multi-task models on cuda against the CPU, one sharing strategy at a time: a four-task model
// (sequence classifier, token classifier, regression, tied LM head) built on the CPU, copied to
// cuda by parameter name, and trained for three SGD steps on both devices over mixed batches with
// padding and an absent task (mtl_check.cuh: losses, penalty, every gradient, every parameter),
// then one Model::step. The weighting here is Equal; test_mtl_weighting.cu covers the
// weightings, test_mtl_trainer.cu the trainer and its checkpoints.
#include "mtl_check.cuh"

int main() {
  using namespace mtl_check;
  return check::run("test_mtl (cuda)", [] {
    auto equal = [] { return mtl::Equal{}; };
    compare_training<mtl::Hard, mtl::Equal>("Hard", equal);
    compare_training<mtl::Hierarchical<1, Understand, Generate>, mtl::Equal>("Hierarchical", equal);
    compare_training<mtl::Soft<1e-2>, mtl::Equal>("Soft", equal);
    compare_training<mtl::CrossStitch<Understand, Generate>, mtl::Equal>("CrossStitch", equal);
    compare_training<mtl::Adapters<2, 4.0>, mtl::Equal>("Adapters (frozen trunk)", equal);
    compare_training<mtl::MMoE<2>, mtl::Equal>("MMoE", equal);
    compare_training<mtl::CGC<1, 1>, mtl::Equal>("CGC", equal);
  });
}
