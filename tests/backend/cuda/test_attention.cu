// scaled_dot_product_attention on cuda against the CPU: head sizes 32 / 64 / 128, causal
// (aligned to the end, Tq < Tk too), key padding, permuted [B, T, H, D] operands, float, double
// and bf16, forward and the gradients of q, k and v. Head sizes up to 128 run the tiled flash
// kernels (partial tiles, Tq != Tk, d != dv included); 160 runs the warp-per-row fallback. The
// T = 1024 cases cover many key and query tiles per block. Segments (sequence packing): packed
// examples of uneven lengths, alone and with causal and padding, on the tiled kernels and the
// warp-per-row fallback.
#include <cstring>

#include "check.cuh"

namespace {

using namespace cerberus;
using check::expect_close;
using check::random;

template <class T>
void check_case(Generator& gen, const char* type, Index b, Index h, Index tq, Index tk, Index d, bool causal, bool padding, bool permuted,
                double tol, Index dv = 0, bool segments = false) {
  if (dv == 0) dv = d;
  AttentionOptions options;
  options.causal = causal;
  if (segments) {  // batch row r: segments of 7 + 13 r, 29, 3, ... keys (uneven, crossing tiles), ids 0, 1, 2, ...
    options.segments = Tensor<std::int64_t, cpu>::empty({b, tk});
    for (Index r = 0; r < b; ++r) {
      const Index lengths[] = {7 + 13 * r, 29, 3, 61, 1, 40};
      Index j = 0, id = 0;
      while (j < tk) {
        const Index end = std::min(tk, j + lengths[id % 6]);
        for (; j < end; ++j) options.segments.data()[r * tk + j] = id;
        ++id;
      }
    }
  }
  if (padding) {
    options.key_padding = Tensor<std::uint8_t, cpu>::empty({b, tk});
    for (Index i = 0; i < b * tk; ++i) options.key_padding.data()[i] = (i % tk) >= tk - 1 - (i / tk) * 3 ? 1 : 0;  // batch row r pads its last 1 + 3r keys
  }
  auto make = [&](Index t, Index width) {
    if (!permuted) return check::leaf_pair(random<T>({b, h, t, width}, gen, -1, 1));
    return check::leaf_pair(random<T>({b, t, h, width}, gen, -1, 1));
  };
  auto q = make(tq, d), k = make(tk, d), v = make(tk, dv);
  auto view = [&](const auto& t) { return permuted ? t.permute({0, 2, 1, 3}) : t; };
  const auto oh = scaled_dot_product_attention(view(q.h), view(k.h), view(v.h), options);
  const auto od = scaled_dot_product_attention(view(q.d), view(k.d), view(v.d), options);
  char where[160];
  std::snprintf(where, sizeof where, "%s B%lld H%lld Tq%lld Tk%lld D%lld Dv%lld%s%s%s", type, static_cast<long long>(b),
                static_cast<long long>(h), static_cast<long long>(tq), static_cast<long long>(tk), static_cast<long long>(d),
                static_cast<long long>(dv), causal ? " causal" : "",
                padding ? " padded" : "", permuted ? " permuted" : "");
  if (segments) std::snprintf(where + std::strlen(where), sizeof where - std::strlen(where), " segments");
  expect_close(std::string("attention ") + where, od, oh, tol);
  const auto up = random<T>(oh.shape(), gen);
  sum(oh * up).backward();
  sum(od * up.template to<cuda>()).backward();
  expect_close(std::string("attention dq ") + where, q.d.grad(), q.h.grad(), tol);
  expect_close(std::string("attention dk ") + where, k.d.grad(), k.h.grad(), tol);
  expect_close(std::string("attention dv ") + where, v.d.grad(), v.h.grad(), tol);
  if (padding || segments) {  // the same masks kept on the device (what a cuda model passes): the same results
    BasicAttentionOptions<cuda> on_device;
    on_device.causal = causal;
    if (options.key_padding.defined()) on_device.key_padding = options.key_padding.to<cuda>();
    if (options.segments.defined()) on_device.segments = options.segments.to<cuda>();
    auto q2 = check::leaf_pair(q.h.detach()), k2 = check::leaf_pair(k.h.detach()), v2 = check::leaf_pair(v.h.detach());
    const auto od2 = scaled_dot_product_attention(view(q2.d), view(k2.d), view(v2.d), on_device);
    expect_close(std::string("attention, device masks, ") + where, od2, oh, tol);
    sum(od2 * up.template to<cuda>()).backward();
    expect_close(std::string("attention dq, device masks, ") + where, q2.d.grad(), q.h.grad(), tol);
    expect_close(std::string("attention dk, device masks, ") + where, k2.d.grad(), k.h.grad(), tol);
    expect_close(std::string("attention dv, device masks, ") + where, v2.d.grad(), v.h.grad(), tol);
  }
}

}  // namespace

int main() {
  return check::run("test_attention (cuda)", [] {
    Generator gen(20240705);
    for (const Index d : {32, 64, 128}) check_case<float>(gen, "float", 2, 3, 70, 70, d, false, false, false, 1e-5);
    check_case<float>(gen, "float", 2, 2, 129, 129, 64, true, false, false, 1e-5);
    check_case<float>(gen, "float", 2, 2, 33, 100, 64, true, true, false, 1e-5);
    check_case<float>(gen, "float", 3, 2, 40, 40, 32, false, true, true, 1e-5);
    check_case<float>(gen, "float", 1, 2, 60, 20, 32, true, false, false, 1e-5);  // Tq > Tk: the first rows see no key
    check_case<double>(gen, "double", 1, 2, 50, 50, 64, true, true, false, 1e-10);
    check_case<bfloat16>(gen, "bf16", 2, 2, 64, 64, 64, true, false, false, 1e-2);
    // Odd sizes for the tiles: d != dv, head sizes not multiples of 32, partial tiles on both sides.
    check_case<float>(gen, "float", 1, 3, 97, 130, 48, false, true, false, 1e-5, 80);
    check_case<float>(gen, "float", 2, 1, 130, 97, 20, true, true, false, 1e-5, 128);
    check_case<double>(gen, "double", 1, 2, 70, 90, 128, false, true, true, 1e-10);
    check_case<double>(gen, "double", 1, 1, 65, 65, 32, true, false, false, 1e-10);
    // Head size above 128: the warp-per-row fallback.
    check_case<float>(gen, "float", 1, 2, 40, 40, 160, true, true, false, 1e-5);
    // Long sequences: 16 query and key tiles per (b, h).
    check_case<float>(gen, "float", 1, 2, 1024, 1024, 64, false, false, false, 1e-4);
    check_case<float>(gen, "float", 1, 2, 1024, 1024, 64, true, false, false, 1e-4);
    check_case<float>(gen, "float", 2, 2, 1024, 1024, 128, true, true, false, 1e-4);
    check_case<float>(gen, "float", 2, 1, 1024, 1024, 128, false, true, true, 1e-4);
    check_case<bfloat16>(gen, "bf16", 1, 2, 1024, 1024, 64, true, true, false, 2e-2);
    // Segments: tiled kernels (float / double, Tq = Tk and Tq < Tk, with causal and padding) and the fallback.
    check_case<float>(gen, "float", 2, 2, 150, 150, 64, false, false, false, 1e-5, 0, true);
    check_case<float>(gen, "float", 2, 2, 150, 150, 64, true, true, false, 1e-5, 0, true);
    check_case<float>(gen, "float", 2, 2, 90, 200, 32, true, false, true, 1e-5, 48, true);
    check_case<double>(gen, "double", 1, 2, 100, 130, 128, true, true, false, 1e-10, 0, true);
    check_case<float>(gen, "float", 1, 2, 70, 70, 160, true, true, false, 1e-5, 0, true);
  });
}
