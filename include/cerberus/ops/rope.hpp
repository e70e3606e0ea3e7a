// Rotary position embedding (RoPE, Su et al. 2021), forward and backward side by side.
//
// Shapes (legend: B = batch, T = time, H = heads, D = head size (even), P = table length):
//   rotary_table<C, Dev>(P, D, theta)                -> RotaryTable {cos [P, D/2], sin [P, D/2]} on Dev
//   rotary_embedding(x [B, T, H, D], table, offset)  -> [B, T, H, D] (contiguous)
//   rotary_embedding(x [B, T, H, D], table, positions int64 [B, T]) -> [B, T, H, D]
//     the same with a position per token (sequence packing: positions restart at 0 in each
//     packed example), each in [0, P)
//
// Token t of x sits at absolute position p = offset + t (offset = the number of tokens already in
// a KV cache). With i < D/2, angle a = p * theta^(-2i / D), and the "rotate half" pairing used by
// GPT-NeoX and Hugging Face's Llama (element i is paired with element i + D/2):
//   y[i]       = x[i] cos a - x[i + D/2] sin a
//   y[i + D/2] = x[i + D/2] cos a + x[i] sin a
// Each pair is rotated by a, so q . k after rotation depends on the positions only through their
// difference. The rotation is orthogonal, so the backward is the rotation by -a (sin negated):
//   dx[i] = dy[i] cos a + dy[i + D/2] sin a,   dx[i + D/2] = dy[i + D/2] cos a - dy[i] sin a.
// Saved for backward: the table (a handle) and the offset; no activations.
//
// The input layout [B, T, H, D] is the one a projection [B, T, H * D] gives as a view, so the op
// reads a projection's output in place and writes the rotated copy in the same layout; attention
// then reads it through a permuted view. Tables are in the compute type (float for bf16).
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <string>
#include <type_traits>
#include <vector>

#include "cerberus/autograd/node.hpp"
#include "cerberus/backend/cpu/thread_pool.hpp"
#include "cerberus/core/dtype.hpp"
#include "cerberus/core/error.hpp"
#include "cerberus/ops/indexing.hpp"
#include "cerberus/tensor/tensor.hpp"

namespace cerberus {

// cos and sin of every (position, frequency) pair, [P, D/2] each, contiguous, on device D (a
// cuda model keeps its table there: no per-call copy).
template <FloatElement C, Device D = cpu>
struct RotaryTable {
  Tensor<C, D> cos, sin;
  Index positions() const { return cos.defined() ? cos.size(0) : 0; }
  Index half_dim() const { return cos.defined() ? cos.size(1) : 0; }
};

// The table for positions 0..P-1 and head size D (even); angles are computed in double, on the
// host, and the table is then moved to device Dev.
template <FloatElement C, Device Dev = cpu>
RotaryTable<C, Dev> rotary_table(Index positions, Index head_dim, double theta = 10000.0) {
  if (head_dim <= 0 || head_dim % 2 != 0)
    throw ValueError("[rotary_table] head_dim must be even and positive, got " + std::to_string(head_dim));
  if (positions < 0) throw ValueError("[rotary_table] positions must be >= 0, got " + std::to_string(positions));
  if (!(theta > 0)) throw ValueError("[rotary_table] theta must be positive, got " + std::to_string(theta));
  const Index half = head_dim / 2;
  RotaryTable<C> table{Tensor<C>::empty(Shape{positions, half}), Tensor<C>::empty(Shape{positions, half})};
  std::vector<double> inv_freq(static_cast<std::size_t>(half));
  for (Index i = 0; i < half; ++i)
    inv_freq[static_cast<std::size_t>(i)] = std::pow(theta, -2.0 * static_cast<double>(i) / static_cast<double>(head_dim));
  for (Index p = 0; p < positions; ++p)
    for (Index i = 0; i < half; ++i) {
      const double a = static_cast<double>(p) * inv_freq[static_cast<std::size_t>(i)];
      table.cos.data()[p * half + i] = static_cast<C>(std::cos(a));
      table.sin.data()[p * half + i] = static_cast<C>(std::sin(a));
    }
  if constexpr (std::is_same_v<Dev, cpu>) return table;
  else return RotaryTable<C, Dev>{table.cos.template to<Dev>(), table.sin.template to<Dev>()};
}

namespace cpu_backend {
inline namespace CERBERUS_SIMD_ABI {

// y = rotation of x by (sign * angle) per pair; x and y contiguous [rows = B * T, H, D]; row r is
// at position positions[r] when positions ([B * T]) is given, else offset + r % T. sign = +1
// forward, -1 backward. The inner loops run over contiguous spans of D/2 and vectorise.
template <class T, class C>
void rotary_apply(const T* x, T* y, Index rows, Index t, Index heads, Index d, const C* cos, const C* sin, Index offset, C sign,
                  const std::int64_t* positions = nullptr) {
  const Index half = d / 2;
  parallel_for(0, rows, std::max<Index>(1, 8192 / std::max<Index>(heads * d, 1)), [=](Index r0, Index r1) {
    for (Index r = r0; r < r1; ++r) {
      const Index p = positions ? static_cast<Index>(positions[r]) : offset + r % t;
      const C* c = cos + p * half;
      const C* s = sin + p * half;
      for (Index h = 0; h < heads; ++h) {
        const T* xa = x + (r * heads + h) * d;
        const T* xb = xa + half;
        T* ya = y + (r * heads + h) * d;
        T* yb = ya + half;
        for (Index i = 0; i < half; ++i) {
          const C a = static_cast<C>(xa[i]), b = static_cast<C>(xb[i]), si = sign * s[i];
          ya[i] = static_cast<T>(a * c[i] - b * si);
          yb[i] = static_cast<T>(b * c[i] + a * si);
        }
      }
    }
  });
}

}  // namespace CERBERUS_SIMD_ABI
}  // namespace cpu_backend

// Rotates q or k [B, T, H, D] by the angles of positions offset .. offset + T - 1; see the top
// of this file. Differentiable in x.
template <FloatElement T>
Tensor<T> rotary_embedding(const Tensor<T>& x, const RotaryTable<compute_t<T>>& table, Index offset = 0) {
  using C = compute_t<T>;
  if (!x.defined()) throw ValueError("[rotary_embedding] x is an undefined tensor");
  if (x.rank() != 4)
    throw ShapeError("[rotary_embedding] x must be [B, T, H, D], got " + x.shape().to_string() + " (table [" +
                     std::to_string(table.positions()) + ", " + std::to_string(table.half_dim()) + "])");
  const Index b = x.size(0), t = x.size(1), h = x.size(2), d = x.size(3);
  if (d != 2 * table.half_dim())
    throw ShapeError("[rotary_embedding] x " + x.shape().to_string() + " has head size " + std::to_string(d) +
                     ", but the table [" + std::to_string(table.positions()) + ", " + std::to_string(table.half_dim()) +
                     "] is for head size " + std::to_string(2 * table.half_dim()));
  if (offset < 0 || offset + t > table.positions())
    throw ValueError("[rotary_embedding] positions " + std::to_string(offset) + ".." + std::to_string(offset + t - 1) + " of x " +
                     x.shape().to_string() + " exceed the table's " + std::to_string(table.positions()) + " positions");
  const Tensor<T> xc = x.detach().contiguous();
  Tensor<T> out = Tensor<T>::empty(x.shape());
  if (out.numel() > 0)
    cpu_backend::rotary_apply<T, C>(xc.data(), out.data(), b * t, t, h, d, table.cos.data(), table.sin.data(), offset, C(1));
  if (autograd::any_requires_grad(x))
    autograd::record<T, cpu>(out, "rotary_embedding", {x}, [table, offset, b, t, h, d](const Tensor<T>& g) {
      const Tensor<T> gc = g.contiguous();
      Tensor<T> dx = Tensor<T>::empty(gc.shape());
      if (dx.numel() > 0)
        cpu_backend::rotary_apply<T, C>(gc.data(), dx.data(), b * t, t, h, d, table.cos.data(), table.sin.data(), offset, C(-1));
      return std::vector<Tensor<T>>{dx};
    });
  return out;
}

namespace detail {

// The checks of rotary_embedding with per-token positions: x [B, T, H, D] against the table, and
// positions int64 [B, T] (host, contiguous) each in [0, P).
template <class X, class C>
void check_rotary_positions(const X& x, const RotaryTable<C>& table, const Tensor<std::int64_t>& positions) {
  const std::string table_shape = "table [" + std::to_string(table.positions()) + ", " + std::to_string(table.half_dim()) + "]";
  if (!x.defined()) throw ValueError("[rotary_embedding] x is an undefined tensor");
  if (x.rank() != 4) throw ShapeError("[rotary_embedding] x must be [B, T, H, D], got " + x.shape().to_string() + " (" + table_shape + ")");
  if (x.size(3) != 2 * table.half_dim())
    throw ShapeError("[rotary_embedding] x " + x.shape().to_string() + " has head size " + std::to_string(x.size(3)) + ", but the " +
                     table_shape + " is for head size " + std::to_string(2 * table.half_dim()));
  if (!positions.defined() || !(positions.shape() == Shape{x.size(0), x.size(1)}))
    throw ShapeError("[rotary_embedding] positions must be int64 [B, T] = [" + std::to_string(x.size(0)) + ", " + std::to_string(x.size(1)) +
                     "] for x " + x.shape().to_string() + ", got " +
                     (positions.defined() ? positions.shape().to_string() : std::string("an undefined tensor")));
  const std::int64_t* p = positions.data();
  for (Index i = 0; i < positions.numel(); ++i)
    if (p[i] < 0 || p[i] >= table.positions())
      throw ValueError("[rotary_embedding] position " + std::to_string(p[i]) + " (token " + std::to_string(i) + " of positions " +
                       positions.shape().to_string() + ") is outside the " + table_shape);
}

}  // namespace detail

// Rotates q or k [B, T, H, D], token (b, t) by the angles of position positions[b, t]; see the
// top of this file. Differentiable in x. Saved for backward: the table and the positions.
template <FloatElement T>
Tensor<T> rotary_embedding(const Tensor<T>& x, const RotaryTable<compute_t<T>>& table, const Tensor<std::int64_t>& positions) {
  using C = compute_t<T>;
  const Tensor<std::int64_t> pos = positions.defined() ? positions.contiguous() : positions;
  detail::check_rotary_positions(x, table, pos);
  const Index b = x.size(0), t = x.size(1), h = x.size(2), d = x.size(3);
  const Tensor<T> xc = x.detach().contiguous();
  Tensor<T> out = Tensor<T>::empty(x.shape());
  if (out.numel() > 0)
    cpu_backend::rotary_apply<T, C>(xc.data(), out.data(), b * t, t, h, d, table.cos.data(), table.sin.data(), 0, C(1), pos.data());
  if (autograd::any_requires_grad(x))
    autograd::record<T, cpu>(out, "rotary_embedding", {x}, [table, pos, b, t, h, d](const Tensor<T>& g) {
      const Tensor<T> gc = g.contiguous();
      Tensor<T> dx = Tensor<T>::empty(gc.shape());
      if (dx.numel() > 0)
        cpu_backend::rotary_apply<T, C>(gc.data(), dx.data(), b * t, t, h, d, table.cos.data(), table.sin.data(), 0, C(-1), pos.data());
      return std::vector<Tensor<T>>{dx};
    });
  return out;
}

// Other devices: the same rotation written with the public ops (slices, broadcast products,
// concat, index_select), so it runs with the device's expression kernels and differentiates
// through them, reading the device's own table (rows offset .. offset + T - 1 as a slice, or
// per-token rows gathered by index_select on the device). For bf16 the products run in bf16
// (the CPU rounds once from float).
namespace detail {
template <FloatElement T, Device D>
Tensor<T, D> rotate_halves(const Tensor<T, D>& x, const Tensor<T, D>& cos, const Tensor<T, D>& sin) {
  const Index d = x.size(3), half = d / 2;
  const Tensor<T, D> a = x.slice(3, 0, half), b = x.slice(3, half, d);
  const Tensor<T, D> ya = a * cos - b * sin, yb = b * cos + a * sin;
  return concat(std::vector<Tensor<T, D>>{ya, yb}, 3);
}
}  // namespace detail

template <FloatElement T, Device D>
  requires(!std::is_same_v<D, cpu>)
Tensor<T, D> rotary_embedding(const Tensor<T, D>& x, const RotaryTable<compute_t<T>, D>& table, Index offset = 0) {
  if (!x.defined()) throw ValueError("[rotary_embedding] x is an undefined tensor");
  if (x.rank() != 4)
    throw ShapeError("[rotary_embedding] x must be [B, T, H, D], got " + x.shape().to_string() + " (table [" +
                     std::to_string(table.positions()) + ", " + std::to_string(table.half_dim()) + "])");
  const Index t = x.size(1), d = x.size(3), half = table.half_dim();
  if (d != 2 * half)
    throw ShapeError("[rotary_embedding] x " + x.shape().to_string() + " has head size " + std::to_string(d) + ", but the table [" +
                     std::to_string(table.positions()) + ", " + std::to_string(half) + "] is for head size " + std::to_string(2 * half));
  if (offset < 0 || offset + t > table.positions())
    throw ValueError("[rotary_embedding] positions " + std::to_string(offset) + ".." + std::to_string(offset + t - 1) + " of x " +
                     x.shape().to_string() + " exceed the table's " + std::to_string(table.positions()) + " positions");
  auto rows = [&](const auto& tab) {
    const Tensor<T, D> r = tab.slice(0, offset, offset + t).contiguous().template to<T>();
    return r.view(Shape{1, t, 1, half});
  };
  return detail::rotate_halves(x, rows(table.cos), rows(table.sin));
}

// Other devices, per-token positions int64 [B, T] on the device. Shapes are checked here; the
// range of the positions by index_select's own check on the device (its error names the bad
// position and the table length).
template <FloatElement T, Device D>
  requires(!std::is_same_v<D, cpu>)
Tensor<T, D> rotary_embedding(const Tensor<T, D>& x, const RotaryTable<compute_t<T>, D>& table, const Tensor<std::int64_t, D>& positions) {
  if (!x.defined() || !positions.defined()) throw ValueError("[rotary_embedding] x and positions must be defined tensors");
  if (x.rank() != 4 || positions.rank() != 2 || positions.size(0) != x.size(0) || positions.size(1) != x.size(1))
    throw ShapeError("[rotary_embedding] x must be [B, T, H, D] and positions [B, T], got x " + x.shape().to_string() + ", positions " +
                     positions.shape().to_string());
  const Index b = x.size(0), t = x.size(1), d = x.size(3), half = table.half_dim();
  if (d != 2 * half)
    throw ShapeError("[rotary_embedding] x " + x.shape().to_string() + " has head size " + std::to_string(d) + ", but the table [" +
                     std::to_string(table.positions()) + ", " + std::to_string(half) + "] is for head size " + std::to_string(2 * half));
  const Tensor<std::int64_t, D> flat = positions.contiguous().view(Shape{b * t});
  auto rows = [&](const auto& tab) {
    const Tensor<T, D> r = index_select(tab, 0, flat).template to<T>();  // [B*T, D/2]
    return r.view(Shape{b, t, 1, half});
  };
  return detail::rotate_halves(x, rows(table.cos), rows(table.sin));
}

}  // namespace cerberus
