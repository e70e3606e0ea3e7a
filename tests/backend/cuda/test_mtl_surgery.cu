// Gradient surgery and mixed precision on cuda against the CPU, over hard sharing (mtl_check.cuh:
// a four-task model copied from the CPU, three SGD steps on mixed batches with padding and an
// absent task; losses, the weighting's report with its coefficients and gradient cosines, every
// gradient and parameter). PCGrad, MGDA and CAGrad take one backward per present task, read each
// task's shared gradient on the host in double, solve on the K x K Gram matrix and write the
// combined gradient back to the device (task_gradients.hpp). Then bf16 models: conflict
// measurement (bf16 gradients read and written back on the device), and Uncertainty, whose
// float log-variances on the device take a float optimizer of their own.
#include "mtl_check.cuh"

int main() {
  using namespace mtl_check;
  return check::run("test_mtl_surgery (cuda)", [] {
    compare_training<mtl::Hard, mtl::PCGrad>("PCGrad", [] { return mtl::PCGrad({.seed = 3}); });
    compare_training<mtl::Hard, mtl::MGDA>("MGDA", [] { return mtl::MGDA({.normalization = mtl::MGDANormalization::l2}); });
    compare_training<mtl::Hard, mtl::CAGrad>("CAGrad", [] { return mtl::CAGrad({.calpha = 0.5}); });

    compare_training<mtl::Hard, mtl::Equal, bfloat16>("bf16 Equal (measure_conflict)", [] { return mtl::Equal({.measure_conflict = true}); });
    compare_training<mtl::Hard, mtl::Uncertainty, bfloat16>("bf16 Uncertainty", [] { return mtl::Uncertainty(4); });
  });
}
