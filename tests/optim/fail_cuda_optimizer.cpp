// Must NOT compile: optimizers on cuda tensors need the CUDA kernels, which only
// <cerberus/backend/cuda.cuh> (nvcc) brings in; without it the step is a compile-time error that
// names that header (tests/CMakeLists.txt checks the message). Not built as a program.
#include "cerberus/optim/sgd.hpp"

int main() {
  cerberus::nn::ParameterList<float, cerberus::cuda> params;
  cerberus::optim::SGD<cerberus::cuda> opt(params, {.lr = 0.1});
  opt.step();
}
