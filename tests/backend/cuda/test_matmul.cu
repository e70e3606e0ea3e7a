// matmul on cuda (cuBLAS) against the CPU GEMM: plain, transposed operands (op flags, no
// copies), strided slices (copied), batched, broadcast batches, vectors, bf16, double,
// matmul_into with alpha/beta, the backward, TF32 opt-in, and the error message.
#include "check.cuh"

namespace {

using namespace cerberus;
using check::expect_close;
using check::random;

template <class T>
void check_products(Generator& gen, const char* type) {
  auto pair = [&](const Shape& a, const Shape& b, const std::string& what, auto view_a, auto view_b) {
    const auto x = random<T>(a, gen, -1, 1), y = random<T>(b, gen, -1, 1);
    const auto dx = x.template to<cuda>();
    const auto dy = y.template to<cuda>();
    expect_close(std::string(type) + " matmul " + what, matmul(view_a(dx), view_b(dy)), matmul(view_a(x), view_b(y)));
  };
  const auto id = [](const auto& t) { return t; };
  const auto tr = [](const auto& t) { return t.t(); };
  pair({64, 48}, {48, 80}, "[64,48] x [48,80]", id, id);
  pair({48, 64}, {48, 80}, "a.t() x b", tr, id);
  pair({64, 48}, {80, 48}, "a x b.t()", id, tr);
  pair({48, 64}, {80, 48}, "a.t() x b.t()", tr, tr);
  pair({1, 300}, {300, 1}, "[1,300] x [300,1]", id, id);
  pair({300}, {300}, "dot [300] . [300]", id, id);
  pair({7, 300}, {300}, "[7,300] x [300]", id, id);
  pair({300}, {300, 9}, "[300] x [300,9]", id, id);
  pair({6, 33, 17}, {6, 17, 21}, "batched [6,33,17] x [6,17,21]", id, id);
  pair({4, 5, 33, 17}, {17, 21}, "broadcast weight [4,5,33,17] x [17,21]", id, id);
  pair({2, 1, 9, 8}, {1, 3, 8, 5}, "broadcast batches [2,1,9,8] x [1,3,8,5]", id, id);
  pair({3, 9, 8}, {3, 5, 8}, "batched a x b^T (transpose(-1,-2))", id, [](const auto& t) { return t.transpose(-1, -2); });
  pair({5, 8, 9}, {9, 7}, "permuted batch a.permute(1,0,2)", [](const auto& t) { return t.permute({1, 0, 2}); }, id);
  pair({40, 60}, {50, 60}, "strided slices (copied)", [](const auto& t) { return t.slice(1, 0, 60, 2); },
       [](const auto& t) { return t.slice(1, 0, 60, 2).t(); });
  pair({0, 8}, {8, 5}, "empty [0,8] x [8,5]", id, id);
  pair({4, 0}, {0, 5}, "k = 0 gives zeros", id, id);
}

void check_matmul_into(Generator& gen) {
  const auto a = random<float>({20, 30}, gen), b = random<float>({30, 10}, gen), c = random<float>({20, 10}, gen);
  const auto dc = c.to<cuda>();
  const Tensor<float, cpu> hc = c.clone();
  matmul_into(hc, a, b, 0.5, 2.0);
  matmul_into(dc, a.to<cuda>(), b.to<cuda>(), 0.5, 2.0);
  expect_close("matmul_into alpha 0.5 beta 2", dc, hc);
  // Into a transposed output view (column-major C).
  const auto hbase = random<float>({10, 20}, gen);
  const auto dbase = hbase.to<cuda>();
  matmul_into(hbase.t(), a, b, 1.0, 1.0);
  matmul_into(dbase.t(), a.to<cuda>(), b.to<cuda>(), 1.0, 1.0);
  expect_close("matmul_into a transposed output, beta 1", dbase, hbase);
  // Into a strided output (no unit stride: through a temporary).
  const auto hs = random<float>({20, 20}, gen);
  const auto ds = hs.to<cuda>();
  matmul_into(hs.slice(1, 0, 20, 2), a, b);
  matmul_into(ds.slice(1, 0, 20, 2), a.to<cuda>(), b.to<cuda>());
  expect_close("matmul_into a strided output", ds, hs);
}

void check_grads(Generator& gen) {
  struct Case {
    Shape a, b;
  };
  for (const Case& c : {Case{{16, 24}, {24, 12}}, Case{{3, 16, 24}, {24, 12}}, Case{{3, 16, 24}, {3, 24, 12}}, Case{{2, 1, 5, 6}, {4, 6, 7}},
                        Case{{24}, {24, 12}}, Case{{16, 24}, {24}}}) {
    auto a = check::leaf_pair(random<float>(c.a, gen)), b = check::leaf_pair(random<float>(c.b, gen));
    const auto out_shape = matmul(a.h.detach(), b.h.detach()).shape();
    const auto w = random<float>(out_shape, gen);
    sum(matmul(a.h, b.h) * w).backward();
    sum(matmul(a.d, b.d) * w.to<cuda>()).backward();
    const std::string what = c.a.to_string() + " x " + c.b.to_string();
    expect_close("grad a of " + what, a.d.grad(), a.h.grad());
    expect_close("grad b of " + what, b.d.grad(), b.h.grad());
  }
}

void check_tf32(Generator& gen) {
  const auto a = random<float>({256, 512}, gen, -1, 1), b = random<float>({512, 128}, gen, -1, 1);
  const auto want = matmul(a, b);
  set_cuda_matmul_tf32(true);
  const auto got = matmul(a.to<cuda>(), b.to<cuda>());
  set_cuda_matmul_tf32(false);
  expect_close("TF32 opt-in [256,512] x [512,128] (tolerance 1e-2)", got, want, 1e-2);
  expect_close("TF32 off again: fp32 result", matmul(a.to<cuda>(), b.to<cuda>()), want);
}

void check_errors() {
  try {
    (void)matmul(Tensor<float, cuda>::empty({3, 4}), Tensor<float, cuda>::empty({5, 6}));
    check::report(false, "matmul shape error", "no exception");
  } catch (const ShapeError& e) {
    check::report(std::string(e.what()).rfind("[matmul] shapes [3, 4] and [5, 6]", 0) == 0, "matmul shape error names op and shapes", e.what());
  }
}

}  // namespace

int main() {
  return check::run("test_matmul (cuda)", [] {
    Generator gen(20240702);
    check_products<float>(gen, "float");
    check_products<double>(gen, "double");
    check_products<bfloat16>(gen, "bf16");
    check_matmul_into(gen);
    check_grads(gen);
    check_tf32(gen);
    check_errors();
  });
}
