// Must NOT compile: optimizers have no cuda kernels yet, and saying so is a compile-time error
// with one plain sentence (tests/CMakeLists.txt checks the message). Not built as a program.
#include "cerberus/optim/sgd.hpp"

int main() {
  cerberus::nn::ParameterList<float, cerberus::cuda> params;
  cerberus::optim::SGD<cerberus::cuda> opt(params, {.lr = 0.1});
  opt.step();
}
