// layer_norm, rms_norm, cross_entropy, rotary_embedding, embedding, index_select, gather, concat, split and
// dropout on cuda against the CPU: forward and backward, float and bf16 (dropout: bitwise).
#include "check.cuh"

namespace {

using namespace cerberus;
using check::expect_close;
using check::random;

template <class T>
void check_norms(Generator& gen, const char* type) {
  for (const Shape& shape : {Shape{37, 129}, Shape{4, 8, 768}, Shape{3, 2048}, Shape{5, 7}}) {
    const Index c = shape[shape.rank() - 1];
    auto x = check::leaf_pair(random<T>(shape, gen, -2, 4));
    auto w = check::leaf_pair(random<T>({c}, gen, 0.5, 1.5));
    auto b = check::leaf_pair(random<T>({c}, gen, -0.5, 0.5));
    const auto up = random<T>(shape, gen);
    const std::string where = std::string(type) + " " + shape.to_string();
    const auto yh = layer_norm(x.h, w.h, b.h);
    const auto yd = layer_norm(x.d, w.d, b.d);
    expect_close("layer_norm " + where, yd, yh);
    sum(yh * up).backward();
    sum(yd * up.template to<cuda>()).backward();
    expect_close("layer_norm dx " + where, x.d.grad(), x.h.grad());
    expect_close("layer_norm dweight " + where, w.d.grad(), w.h.grad());
    expect_close("layer_norm dbias " + where, b.d.grad(), b.h.grad());

    auto x2 = check::leaf_pair(random<T>(shape, gen));
    auto w2 = check::leaf_pair(random<T>({c}, gen, 0.5, 1.5));
    const auto rh = rms_norm(x2.h, w2.h);
    const auto rd = rms_norm(x2.d, w2.d);
    expect_close("rms_norm " + where, rd, rh);
    sum(rh * up).backward();
    sum(rd * up.template to<cuda>()).backward();
    expect_close("rms_norm dx " + where, x2.d.grad(), x2.h.grad());
    expect_close("rms_norm dweight " + where, w2.d.grad(), w2.h.grad());
  }
  // No weight or bias, transposed (non-contiguous) input.
  const auto x = random<T>({64, 40}, gen);
  expect_close(std::string(type) + " layer_norm of x.t() without weight", layer_norm(x.template to<cuda>().t()), layer_norm(x.t()));
}

template <class T>
void check_cross_entropy(Generator& gen, const char* type) {
  const Index n = 96, v = 1000;
  auto targets = Tensor<std::int64_t, cpu>::empty({n});
  for (Index r = 0; r < n; ++r) targets.data()[r] = r % 7 == 3 ? -100 : static_cast<std::int64_t>(gen.next_u32() % v);
  const auto weights = random<float>({n}, gen, 0.0, 2.0);
  struct Variant {
    const char* name;
    CrossEntropyOptions options;
  };
  CrossEntropyOptions smooth;
  smooth.label_smoothing = 0.1;
  CrossEntropyOptions weighted;
  weighted.weights = weights;
  weighted.label_smoothing = 0.05;
  CrossEntropyOptions none;
  none.reduction = Reduction::none;
  CrossEntropyOptions summed;
  summed.reduction = Reduction::sum;
  for (const Variant& var : {Variant{"mean, ignore_index", {}}, Variant{"label smoothing 0.1", smooth}, Variant{"weights + smoothing", weighted},
                             Variant{"reduction none", none}, Variant{"reduction sum", summed}}) {
    auto x = check::leaf_pair(random<T>({n, v}, gen, -6, 6));
    const auto lh = cross_entropy(x.h, targets, var.options);
    const auto ld = cross_entropy(x.d, targets.to<cuda>(), var.options);
    const std::string where = std::string(type) + " [96, 1000] " + var.name;
    // The loss is in the compute type (float for bf16 logits), summed from the same bf16 inputs.
    expect_close("cross_entropy " + where, ld, lh, std::is_same_v<T, bfloat16> ? 1e-4 : check::tolerance<T>());
    const auto up = random<compute_t<T>>(lh.shape(), gen, 0.5, 1.5);
    sum(lh * up).backward();
    sum(ld * up.template to<cuda>()).backward();
    expect_close("cross_entropy dlogits " + where, x.d.grad(), x.h.grad());
  }
  // Every target ignored: a mean of 0 and zero gradients on both devices (not 0/0).
  {
    const auto ignored = full<std::int64_t>({4, 24}, -100);
    auto x = check::leaf_pair(random<T>({4, 24, 50}, gen));
    const auto lh = cross_entropy(x.h, ignored);
    const auto ld = cross_entropy(x.d, ignored.to<cuda>());
    expect_close(std::string(type) + " cross_entropy with every target ignored", ld, lh);
    lh.backward();
    ld.backward();
    expect_close(std::string(type) + " cross_entropy dlogits with every target ignored", x.d.grad(), x.h.grad());
  }
  // Two bad targets: the device finds both, and the error names the first row, as on the CPU.
  auto bad = targets.clone();
  bad.data()[11] = -7;
  bad.data()[5] = v;
  try {
    (void)cross_entropy(random<T>({n, v}, gen).template to<cuda>(), bad.to<cuda>());
    check::report(false, "cross_entropy rejects a target out of range", "no exception");
  } catch (const IndexError& e) {
    check::report(std::string(e.what()).rfind("[cross_entropy] target 1000 at row 5", 0) == 0, "cross_entropy rejects a target out of range", e.what());
  }
}

template <class T>
void check_indexing(Generator& gen, const char* type) {
  const Index V = 50, C = 24;
  auto ids = Tensor<std::int64_t, cpu>::empty({4, 9});
  for (Index i = 0; i < 36; ++i) ids.data()[i] = static_cast<std::int64_t>(gen.next_u32() % 10);  // many repeats: scatter-add accumulates
  auto w = check::leaf_pair(random<T>({V, C}, gen));
  const auto eh = embedding(w.h, ids, Index(3));
  const auto ed = embedding(w.d, ids.to<cuda>(), Index(3));
  expect_close(std::string(type) + " embedding [50,24] ids [4,9]", ed, eh);
  const auto up = random<T>(eh.shape(), gen);
  sum(eh * up).backward();
  sum(ed * up.template to<cuda>()).backward();
  expect_close(std::string(type) + " embedding dweight (scatter-add, padding_idx 3)", w.d.grad(), w.h.grad());

  auto x = check::leaf_pair(random<T>({6, 11, 5}, gen));
  auto idx = Tensor<std::int64_t, cpu>::empty({8});
  for (Index i = 0; i < 8; ++i) idx.data()[i] = static_cast<std::int64_t>((i * 7) % 11);
  const auto sh = index_select(x.h, 1, idx);
  const auto sd = index_select(x.d, 1, idx.to<cuda>());
  expect_close(std::string(type) + " index_select axis 1", sd, sh);
  auto gidx = Tensor<std::int64_t, cpu>::empty({6, 4, 5});
  for (Index i = 0; i < gidx.numel(); ++i) gidx.data()[i] = static_cast<std::int64_t>(gen.next_u32() % 11);
  const auto gh = gather(x.h, 1, gidx);
  const auto gd = gather(x.d, 1, gidx.to<cuda>());
  expect_close(std::string(type) + " gather axis 1", gd, gh);
  const auto parts_h = split(x.h, 4, 1);
  const auto parts_d = split(x.d, 4, 1);
  const auto ch = concat({sh, gh, parts_h[1]}, 1);
  const auto cd = concat({sd, gd, parts_d[1]}, 1);
  expect_close(std::string(type) + " concat of index_select, gather and a split part", cd, ch);
  const auto up2 = random<T>(ch.shape(), gen);
  sum(ch * up2).backward();
  sum(cd * up2.template to<cuda>()).backward();
  expect_close(std::string(type) + " grad through index_select + gather + split + concat", x.d.grad(), x.h.grad());
  try {
    auto badidx = idx.clone();
    badidx.data()[2] = 11;
    (void)index_select(x.d.detach(), 1, badidx.to<cuda>());
    check::report(false, "index_select rejects an index out of range", "no exception");
  } catch (const IndexError& e) {
    check::report(std::string(e.what()).find("index 11 at position [2]") != std::string::npos, "index_select rejects an index out of range (device check)",
                  e.what());
  }
}

template <class T>
void check_dropout(Generator&, const char* type) {
  Generator g1(77), g2(77), data(5);
  const auto values = random<T>({33, 257}, data);
  auto x = check::leaf_pair(values);
  const auto yh = dropout(x.h, 0.3, true, g1);
  const auto yd = dropout(x.d, 0.3, true, g2);
  check::expect_bitwise(std::string(type) + " dropout p=0.3: same mask and values as the CPU", yd, yh);
  const auto up = random<T>({33, 257}, data);
  sum(yh * up).backward();
  sum(yd * up.template to<cuda>()).backward();
  expect_close(std::string(type) + " dropout backward (regenerated mask)", x.d.grad(), x.h.grad());
  const auto th = dropout(values.t(), 0.5, true, g1);
  const auto td = dropout(values.template to<cuda>().t(), 0.5, true, g2);
  check::expect_bitwise(std::string(type) + " dropout of a transposed view", td, th);
}

// RoPE with the table on the device: positions as an offset (a slice of the table) and per
// token (packed rows: rows gathered by index_select on the device), forward and gradient against
// the CPU with its host table; a position past the table is refused.
template <class T>
void check_rotary(Generator& gen, const char* type) {
  const auto host_table = rotary_table<compute_t<T>>(40, 16);
  const auto device_table = rotary_table<compute_t<T>, cuda>(40, 16);
  auto positions = Tensor<std::int64_t, cpu>::empty({2, 11});
  for (Index i = 0; i < 22; ++i) positions.data()[i] = (i * 7) % 13 + (i / 11) * 20;  // restarts, repeats, up to 32
  // bf16: the device rounds each product and the difference to bf16, the CPU once from float.
  const double tol = std::is_same_v<T, bfloat16> ? 3e-2 : check::tolerance<T>();
  for (const bool per_token : {false, true}) {
    auto x = check::leaf_pair(random<T>({2, 11, 3, 16}, gen, -1, 1));
    const auto yh = per_token ? rotary_embedding(x.h, host_table, positions) : rotary_embedding(x.h, host_table, Index{5});
    const auto yd = per_token ? rotary_embedding(x.d, device_table, positions.to<cuda>()) : rotary_embedding(x.d, device_table, Index{5});
    const std::string where = std::string(type) + (per_token ? " rotary_embedding, positions per token" : " rotary_embedding, offset 5");
    expect_close(where, yd, yh, tol);
    const auto up = random<T>(yh.shape(), gen);
    sum(yh * up).backward();
    sum(yd * up.template to<cuda>()).backward();
    expect_close(where + " dx", x.d.grad(), x.h.grad(), tol);
  }
  auto bad = positions.clone();
  bad.data()[3] = 40;
  try {
    (void)rotary_embedding(random<T>({2, 11, 3, 16}, gen).template to<cuda>(), device_table, bad.to<cuda>());
    check::report(false, std::string(type) + " rotary_embedding refuses a position past the table", "no exception");
  } catch (const IndexError& e) {
    check::report(std::string(e.what()).find("40") != std::string::npos, std::string(type) + " rotary_embedding refuses a position past the table",
                  e.what());
  }
}

}  // namespace

int main() {
  return check::run("test_nn_ops (cuda)", [] {
    Generator gen(20240704);
    check_norms<float>(gen, "float");
    check_norms<bfloat16>(gen, "bf16");
    check_cross_entropy<float>(gen, "float");
    check_cross_entropy<bfloat16>(gen, "bf16");
    check_indexing<float>(gen, "float");
    check_indexing<bfloat16>(gen, "bf16");
    check_dropout<float>(gen, "float");
    check_dropout<bfloat16>(gen, "bf16");
    check_rotary<float>(gen, "float");
    check_rotary<bfloat16>(gen, "bf16");
  });
}
