// A consumer of cerberus as its users build it: through find_package (installed tree),
// add_subdirectory, pkg-config or a plain -I. Builds tensors, evaluates fused expressions through
// broadcasting and views, draws seeded random numbers and checks the values; exits nonzero on any
// mismatch.
#include <cerberus/cerberus.hpp>
#include <cerberus/fwd.hpp>
#include <cerberus/io.hpp>

#include <cmath>
#include <cstdio>
#include <sstream>
#include <string>

namespace {

int failures = 0;

void check(bool ok, const char* what) {
  if (!ok) {
    std::fprintf(stderr, "consumer: FAILED: %s\n", what);
    ++failures;
  }
}

// Needs only the forward declarations to be declared.
float total(const cerberus::Tensor<float, cerberus::cpu>& t);

float total(const cerberus::Tensor<float, cerberus::cpu>& t) {
  float s = 0;
  for (float v : t.to_vector()) s += v;
  return s;
}

}  // namespace

int main() {
  using namespace cerberus;

  // a = [[0, 1, 2], [3, 4, 5]], b = [10, 20, 30] broadcast over the rows.
  const Tensor<float> a = arange<float>(6).reshape({2, 3});
  const Tensor<float> b = from_vector<float>({10.0f, 20.0f, 30.0f});
  const Tensor<float> c = a * 2.0f + b;
  check(c.shape() == Shape{2, 3}, "a * 2 + b has shape [2, 3]");
  for (Index r = 0; r < 2; ++r)
    for (Index j = 0; j < 3; ++j)
      check(c(r, j) == 2.0f * static_cast<float>(3 * r + j) + 10.0f * static_cast<float>(j + 1), "a * 2 + b values");
  check(total(c) == 2.0f * 15.0f + 2.0f * 60.0f, "sum of a * 2 + b");

  // One fused pass over a transposed (non-contiguous) view: exp(log(x + 1)) - 1 == x.
  const Tensor<float> ct = c.t();
  const Tensor<float> round_trip = exp(log(ct + 1.0f)) - 1.0f;
  check(round_trip.shape() == Shape{3, 2}, "transposed shape");
  for (Index i = 0; i < 3; ++i)
    for (Index j = 0; j < 2; ++j)
      check(std::fabs(round_trip(i, j) - c(j, i)) <= 1e-4f * (1.0f + std::fabs(c(j, i))), "exp(log(x + 1)) - 1 == x");

  // In-place update through a view writes into the parent's storage.
  Tensor<float> m = zeros<float>({2, 3});
  m.select(0, 1) += 5.0f;
  check(m(0, 0) == 0.0f && m(1, 2) == 5.0f, "select view += writes through");

  // bfloat16: 1 + 2^-8 is a tie and rounds to the even neighbour, 1.
  check(static_cast<float>(bfloat16(1.0f + 1.0f / 256)) == 1.0f, "bfloat16 rounds ties to even");

  // Seeded random tensors are reproducible and in range.
  Generator g1(1234), g2(1234);
  const auto u1 = uniform<float>(Shape{4096}, 0.0, 1.0, g1).to_vector();
  const auto u2 = uniform<float>(Shape{4096}, 0.0, 1.0, g2).to_vector();
  check(u1 == u2, "same seed, same numbers");
  bool in_range = true;
  double mean = 0;
  for (float v : u1) {
    in_range = in_range && v >= 0.0f && v < 1.0f;
    mean += v;
  }
  mean /= static_cast<double>(u1.size());
  check(in_range, "uniform in [0, 1)");
  check(std::fabs(mean - 0.5) < 0.05, "uniform mean near 0.5");

  // Shape errors name the op's operands.
  try {
    const Tensor<float> bad = a + ones<float>(Shape{4});
    check(false, "broadcasting [2, 3] with [4] must throw");
  } catch (const ShapeError& e) {
    check(std::string(e.what()).find("[2, 3]") != std::string::npos, "ShapeError names the shape");
  }

  std::ostringstream text;
  text << c;
  check(text.str().find("shape=[2, 3]") != std::string::npos, "operator<< prints the shape");

  std::printf("cerberus %d.%d.%d consumer: %s\n", CERBERUS_VERSION_MAJOR, CERBERUS_VERSION_MINOR,
              CERBERUS_VERSION_PATCH, failures ? "FAILED" : "ok");
  return failures ? 1 : 0;
}
