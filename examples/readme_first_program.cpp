// The program shown in README.md under "A first program"; tests/docs checks the two agree.
#include <cerberus/cerberus.hpp>
#include <cerberus/io.hpp>
#include <iostream>

int main() {
  using namespace cerberus;
  Generator gen(42);
  auto x = normal<float>({4, 3}, 0.0, 1.0, gen);
  auto bias = from_vector<float>({0.1f, 0.2f, 0.3f});

  Tensor<float> y = gelu(x * 2.0f + bias);      // one fused pass, bias broadcast over rows
  std::cout << y.t() << "\n";                    // a transposed view, no copy
  std::cout << softmax(y, -1) << "\n";
}
