// Multi-task models on cuda against the CPU, one loss weighting at a time, over hard sharing
// (mtl_check.cuh: a four-task model copied from the CPU, three SGD steps on mixed batches with
// padding and an absent task; losses, the weighting's report, every gradient and parameter,
// the weighting's own parameters included): the static and adaptive weightings. Conflict
// measurement and GradNorm read the per-task gradients on the host in double and write the
// combined gradient back to the device (task_gradients.hpp). Gradient surgery and mixed
// precision: test_mtl_surgery.cu (one unit each, so that nvcc builds them in parallel).
#include "mtl_check.cuh"

int main() {
  using namespace mtl_check;
  return check::run("test_mtl_weighting (cuda)", [] {
    compare_training<mtl::Hard, mtl::Static<1.0, 0.5, 2.0, 1.0>>("Static", [] { return mtl::Static<1.0, 0.5, 2.0, 1.0>{}; });
    compare_training<mtl::Hard, mtl::RuntimeStatic>("RuntimeStatic", [] { return mtl::RuntimeStatic({0.5, 1.0, 1.5, 2.0}); });
    compare_training<mtl::Hard, mtl::Equal>("Equal (measure_conflict)", [] { return mtl::Equal({.measure_conflict = true}); });
    compare_training<mtl::Hard, mtl::DWA>("DWA", [] { return mtl::DWA({.temperature = 2.0, .steps_per_epoch = 1}); });
    compare_training<mtl::Hard, mtl::RLW>("RLW", [] { return mtl::RLW({.seed = 7}); });
    compare_training<mtl::Hard, mtl::Uncertainty>("Uncertainty", [] { return mtl::Uncertainty(4, {.measure_conflict = true}); });
    compare_training<mtl::Hard, mtl::GradNorm>("GradNorm", [] { return mtl::GradNorm(4, {.alpha = 1.5}); });
  });
}
