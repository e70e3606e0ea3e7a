// gradcheck of matmul for every operand layout: matrices, vectors, broadcast batches, transposed views.
#include "cerberus/cerberus.hpp"
#include "cerberus/testing/gradcheck.hpp"
#include "support/catch.hpp"
using namespace cerberus;
using Inputs = std::vector<Tensor<double>>;
TEST_CASE("matmul gradients") {
  Generator g(3);
  auto r = [&](const Shape& s) { return uniform<double>(s, -1, 1, g); };
  struct C { Shape a, b; };
  for (auto c : std::vector<C>{{{3,4},{4,5}}, {{4},{4}}, {{4},{4,5}}, {{3,4},{4}}, {{2,3,4},{4,5}}, {{2,3,4},{2,4,5}}, {{2,1,3,4},{3,4,2}}, {{3,4},{2,4,5}}}) {
    auto res = testing::gradcheck([](const Inputs& x) { return matmul(x[0], x[1]); }, {r(c.a), r(c.b)});
    INFO(c.a.to_string() << " x " << c.b.to_string() << ": " << res.message);
    CHECK(res.ok);
  }
  auto res = testing::gradcheck([](const Inputs& x) { return matmul(x[0].t(), x[1]); }, {r({4,3}), r({4,5})});
  INFO(res.message); CHECK(res.ok);
}
