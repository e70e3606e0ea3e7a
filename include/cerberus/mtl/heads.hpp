// Task heads on the trunk output contract: hidden states [B, T, C] after the trunk's final norm,
// with the key padding mask (uint8 [B, T], nonzero = padded, or undefined = nothing padded).
//
// Legend: B = examples of this task, T = time, C = d_model, N = classes, K = outputs, V = vocab.
//   SequenceClassifier<N, Pooling>  pool [B, T, C] -> [B, C], Linear C -> N   -> logits [B, N]
//                                   loss: cross_entropy(logits, batch.labels [B]), mean
//   TokenClassifier<N>              Linear C -> N per token                  -> logits [B, T, N]
//                                   loss: cross_entropy over batch.token_labels [B, T], padded
//                                   tokens and -100 ignored, mean over counted tokens
//   Regression<K, Pooling>          pool, Linear C -> K                      -> [B, K]
//                                   loss: mean squared error against batch.values [B] (K = 1) or [B, K]
//   LMHead<Tying>                   hidden x W^T, W [V, C] the trunk's token embedding (tied, the
//                                   same storage) or its own Linear (untied) -> logits [B, T, V]
//                                   loss: cross_entropy over batch.token_labels (next-token targets);
//                                   hidden_loss(hidden, batch) gives the same loss from the hidden
//                                   states through linear_cross_entropy, never holding [B, T, V]
//                                   (mtl::Model uses it when only losses are asked for: training)
// Pooling (right padding assumed): first = position 0; mean = average over non-padded positions;
// last = the last non-padded position of each row.
//
// Every head is a Module built from a HeadContext (the trunk's width, vocabulary and token
// embedding) by the model, and offers forward(hidden, padding) and loss(output, batch), where
// batch holds only this task's examples. Losses are in the compute type compute_t<T>: a bf16
// head (mixed precision) computes bf16 outputs but returns a float loss (cross_entropy's float
// sums; Regression converts prediction and targets to float before squaring), whose backward
// gives the outputs bf16 gradients; float and double heads return T. `input_width` is the width a head requires at compile
// time (0: whatever the trunk gives, read at run time); `element_type` must be the trunk's.
// `per_token = true` marks a head that reads every position on its own (TokenClassifier, LMHead):
// only such heads take packed rows (Batch::segments, several examples per row); mtl::Model
// refuses a packed batch for any other head, since pooling would mix the examples of a row.
//
// Device: the last template parameter (cpu by default). A model runs its heads on its trunk's
// device: mtl::Model rebinds each head type through its `on_device<D>` alias (head_on_t), so a
// task list written once (Task<"s", SequenceClassifier<2>>) serves a cpu and a cuda trunk. Pooling
// `last` and the padding of token labels read the [B, T] padding mask on the host (one small copy
// on a device), because they build index lists and label rows from it.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <type_traits>
#include <vector>

#include "cerberus/core/device.hpp"
#include "cerberus/mtl/batch.hpp"
#include "cerberus/nn/embedding.hpp"
#include "cerberus/nn/linear.hpp"
#include "cerberus/nn/module.hpp"
#include "cerberus/ops/indexing.hpp"
#include "cerberus/ops/linear.hpp"
#include "cerberus/ops/linear_cross_entropy.hpp"
#include "cerberus/ops/loss.hpp"
#include "cerberus/ops/reduce.hpp"

namespace cerberus::mtl {

// What a head may need from the trunk it sits on.
template <Element T = float, Device D = cpu>
struct HeadContext {
  Index d_model = 0;                                // C
  Index vocab_size = 0;                             // V
  std::shared_ptr<nn::Embedding<T, D>> embedding;   // the token embedding (tied LM heads), may be null
};

// What the model requires of a head type H over element type T on device D.
template <class H, class T, class D = cpu>
concept TaskHead = requires(H& h, const Tensor<T, D>& x, const Tensor<std::uint8_t, D>& m, const Batch<T, D>& b, const HeadContext<T, D>& c,
                            Generator& g) {
  typename H::element_type;
  { H::input_width } -> std::convertible_to<Index>;
  H(c, g);
  { h.forward(x, m) } -> std::same_as<Tensor<T, D>>;
  { h.loss(x, b) } -> std::same_as<Tensor<compute_t<T>, D>>;
};

// Head type H on device D: H's own `on_device<D>` (every head here has one), else H itself (a
// head of your own without it runs on the device it was written for).
template <class H, class D>
using head_on_t = rebind_device_t<H, D>;

enum class Pooling { first, mean, last };
enum class Tying { tied, untied };

namespace detail {

// t in its compute type (float for bf16), differentiably; t itself when T is its own compute type.
template <FloatElement T, Device D>
Tensor<compute_t<T>, D> to_compute(const Tensor<T, D>& t) {
  if constexpr (std::is_same_v<T, compute_t<T>>) return t;
  else return t.template to<compute_t<T>>();
}

template <Device D>
void check_hidden(const char* op, const Shape& hidden, const Tensor<std::uint8_t, D>& padding, Index width) {
  if (hidden.rank() != 3 || hidden[2] != width)
    throw ShapeError(std::string("[") + op + "] hidden states must be [B, T, " + std::to_string(width) + "], got " + hidden.to_string());
  if (padding.defined() && !(padding.shape() == Shape{hidden[0], hidden[1]}))
    throw ShapeError(std::string("[") + op + "] padding " + padding.shape().to_string() + " must be [B, T] of hidden " + hidden.to_string());
}

// Position of the last non-padded token of each row (T - 1 without a mask; 0 for an all-padded row).
template <Device D>
std::vector<std::int64_t> last_positions(const Tensor<std::uint8_t, D>& padding, Index b, Index t) {
  std::vector<std::int64_t> out(static_cast<std::size_t>(b), t - 1);
  if (!padding.defined()) return out;
  const std::vector<std::uint8_t> m = padding.to_vector();
  for (Index i = 0; i < b; ++i) {
    std::int64_t last = 0;
    for (Index j = 0; j < t; ++j)
      if (m[static_cast<std::size_t>(i * t + j)] == 0) last = j;
    out[static_cast<std::size_t>(i)] = last;
  }
  return out;
}

// hidden [B, T, C] -> [B, C].
template <Element T, Device D>
Tensor<T, D> pool(Pooling pooling, const Tensor<T, D>& hidden, const Tensor<std::uint8_t, D>& padding) {
  const Index b = hidden.size(0), t = hidden.size(1), c = hidden.size(2);
  if (pooling == Pooling::first) return hidden.select(1, 0);
  if (pooling == Pooling::last) {
    std::vector<std::int64_t> flat = last_positions(padding, b, t);
    for (Index i = 0; i < b; ++i) flat[static_cast<std::size_t>(i)] += i * t;
    return index_select(hidden.reshape({b * t, c}), 0, detail::host_to<D>(from_vector<std::int64_t>(flat)));
  }
  if (!padding.defined()) return mean(hidden, 1);
  const Tensor<T, D> keep = 1.0 - padding.template to<T>();                     // [B, T]
  const Tensor<T, D> count = clamp(sum(keep, 1, true), 1.0, 1e30);              // [B, 1]
  return sum(hidden * keep.unsqueeze(2), 1) / count;                            // [B, C]
}

// token_labels [B, T] with -100 wherever padding is nonzero.
// (Integer tensors have no elementwise expressions, so this runs on the host: on a device, two
// [B, T] copies down and one up.)
template <Device D>
Tensor<std::int64_t, D> ignore_padded(const Tensor<std::int64_t, D>& labels, const Tensor<std::uint8_t, D>& padding, std::int64_t ignore) {
  if (!padding.defined()) return labels;
  std::vector<std::int64_t> l = labels.to_vector();
  const std::vector<std::uint8_t> m = padding.to_vector();
  for (std::size_t i = 0; i < l.size(); ++i)
    if (m[i] != 0) l[i] = ignore;
  return detail::host_to<D>(from_vector<std::int64_t>(l, labels.shape()));
}

template <class Field>
void require_field(const char* op, const Field& f, const char* name, const Shape& want) {
  if (!f.defined()) throw ValueError(std::string("[") + op + "] the batch has no " + name + " (needed: " + want.to_string() + ")");
  if (!(f.shape() == want))
    throw ShapeError(std::string("[") + op + "] batch." + name + " must be " + want.to_string() + ", got " + f.shape().to_string());
}

}  // namespace detail

// Sequence classification: pool, then one Linear C -> N.
template <Index N, Pooling P = Pooling::first, Element T = float, Device D = cpu>
class SequenceClassifier : public nn::Module<SequenceClassifier<N, P, T, D>, T, D> {
  static_assert(N >= 2, "a sequence classifier needs at least two classes.");

 public:
  template <Device D2>
  using on_device = SequenceClassifier<N, P, T, D2>;
  static constexpr Index input_width = 0;
  static constexpr Index classes = N;
  static constexpr Pooling pooling = P;
  nn::Linear<T, D> proj;  // [N, C] + [N]

  SequenceClassifier(const HeadContext<T, D>& ctx, Generator& gen) : proj(ctx.d_model, N, true, gen) {}

  // hidden [B, T, C], padding [B, T] or {} -> logits [B, N].
  Tensor<T, D> forward(const Tensor<T, D>& hidden, const Tensor<std::uint8_t, D>& padding = {}) const {
    detail::check_hidden("SequenceClassifier", hidden.shape(), padding, proj.in_features());
    return proj(detail::pool(P, hidden, padding));
  }
  // Mean cross-entropy against batch.labels [B].
  Tensor<compute_t<T>, D> loss(const Tensor<T, D>& logits, const Batch<T, D>& batch) const {
    detail::require_field("SequenceClassifier", batch.labels, "labels", Shape{logits.size(0)});
    return cross_entropy(logits, batch.labels);
  }

  template <class F>
  void visit_children(F&& f) {
    f("proj", proj);
  }
};

// Token classification: one Linear C -> N per position.
template <Index N, Element T = float, Device D = cpu>
class TokenClassifier : public nn::Module<TokenClassifier<N, T, D>, T, D> {
  static_assert(N >= 2, "a token classifier needs at least two classes.");

 public:
  template <Device D2>
  using on_device = TokenClassifier<N, T, D2>;
  static constexpr Index input_width = 0;
  static constexpr Index classes = N;
  static constexpr bool per_token = true;
  nn::Linear<T, D> proj;

  TokenClassifier(const HeadContext<T, D>& ctx, Generator& gen) : proj(ctx.d_model, N, true, gen) {}

  Tensor<T, D> forward(const Tensor<T, D>& hidden, const Tensor<std::uint8_t, D>& padding = {}) const {
    detail::check_hidden("TokenClassifier", hidden.shape(), padding, proj.in_features());
    return proj(hidden);
  }
  // Mean cross-entropy over the counted tokens of batch.token_labels [B, T] (padding ignored).
  Tensor<compute_t<T>, D> loss(const Tensor<T, D>& logits, const Batch<T, D>& batch) const {
    detail::require_field("TokenClassifier", batch.token_labels, "token_labels", Shape{logits.size(0), logits.size(1)});
    return cross_entropy(logits, detail::ignore_padded(batch.token_labels, batch.padding, -100));
  }

  template <class F>
  void visit_children(F&& f) {
    f("proj", proj);
  }
};

// Regression of K values per sequence: pool, Linear C -> K, mean squared error.
template <Index K = 1, Pooling P = Pooling::mean, Element T = float, Device D = cpu>
class Regression : public nn::Module<Regression<K, P, T, D>, T, D> {
  static_assert(K >= 1, "a regression head needs at least one output.");

 public:
  template <Device D2>
  using on_device = Regression<K, P, T, D2>;
  static constexpr Index input_width = 0;
  static constexpr Index outputs = K;
  nn::Linear<T, D> proj;

  Regression(const HeadContext<T, D>& ctx, Generator& gen) : proj(ctx.d_model, K, true, gen) {}

  // -> [B, K]
  Tensor<T, D> forward(const Tensor<T, D>& hidden, const Tensor<std::uint8_t, D>& padding = {}) const {
    detail::check_hidden("Regression", hidden.shape(), padding, proj.in_features());
    return proj(detail::pool(P, hidden, padding));
  }
  // mean over B and K of (prediction - batch.values)^2; values [B] when K = 1, else [B, K].
  // In the compute type: a bf16 prediction and bf16 targets are converted to float first.
  Tensor<compute_t<T>, D> loss(const Tensor<T, D>& prediction, const Batch<T, D>& batch) const {
    const Index b = prediction.size(0);
    const bool flat = K == 1 && batch.values.defined() && batch.values.rank() == 1;
    detail::require_field("Regression", batch.values, "values", flat ? Shape{b} : Shape{b, K});
    const Tensor<compute_t<T>, D> diff = detail::to_compute(flat ? prediction.reshape({b}) : prediction) - detail::to_compute(batch.values);
    return mean(diff * diff);
  }

  template <class F>
  void visit_children(F&& f) {
    f("proj", proj);
  }
};

// Language-model head: logits = hidden W^T with W [V, C] the trunk's token embedding (tied: the
// same tensor, listed under the trunk, not here) or a Linear of its own (untied).
template <Tying Tie = Tying::tied, Element T = float, Device D = cpu>
class LMHead : public nn::Module<LMHead<Tie, T, D>, T, D> {
 public:
  template <Device D2>
  using on_device = LMHead<Tie, T, D2>;
  static constexpr Index input_width = 0;
  static constexpr Tying tying = Tie;
  static constexpr bool per_token = true;
  std::shared_ptr<nn::Embedding<T, D>> embedding;  // tied only
  nn::Linear<T, D> proj;                            // untied only: [V, C], no bias

  LMHead(const HeadContext<T, D>& ctx, Generator& gen) {
    if constexpr (Tie == Tying::tied) {
      if (!ctx.embedding || ctx.embedding->embedding_dim() != ctx.d_model)
        throw ValueError("[mtl::LMHead] a tied LM head needs the trunk's token embedding [V, " + std::to_string(ctx.d_model) + "]");
      embedding = ctx.embedding;
    } else {
      proj = nn::Linear<T, D>(ctx.d_model, ctx.vocab_size, false, gen);
    }
  }

  // The [V, C] matrix of the head.
  const Tensor<T, D>& weight() const {
    if constexpr (Tie == Tying::tied) return embedding->weight;
    else return proj.weight;
  }

  // hidden [B, T, C] -> logits [B, T, V].
  Tensor<T, D> forward(const Tensor<T, D>& hidden, const Tensor<std::uint8_t, D>& padding = {}) const {
    detail::check_hidden("LMHead", hidden.shape(), padding, weight().size(1));
    return linear(hidden, weight());
  }
  // Mean cross-entropy over batch.token_labels [B, T] (next-token targets; -100 and padding ignored).
  Tensor<compute_t<T>, D> loss(const Tensor<T, D>& logits, const Batch<T, D>& batch) const {
    detail::require_field("LMHead", batch.token_labels, "token_labels", Shape{logits.size(0), logits.size(1)});
    return cross_entropy(logits, detail::ignore_padded(batch.token_labels, batch.padding, -100));
  }
  // loss(forward(hidden, batch.padding), batch) without the [B, T, V] logits: the product and the
  // loss in row blocks (ops/linear_cross_entropy.hpp), the same numbers on the CPU.
  Tensor<compute_t<T>, D> hidden_loss(const Tensor<T, D>& hidden, const Batch<T, D>& batch) const {
    detail::check_hidden("LMHead", hidden.shape(), batch.padding, weight().size(1));
    detail::require_field("LMHead", batch.token_labels, "token_labels", Shape{hidden.size(0), hidden.size(1)});
    return linear_cross_entropy(hidden, weight(), detail::ignore_padded(batch.token_labels, batch.padding, -100));
  }

  template <class F>
  void visit_children(F&& f) {
    if constexpr (Tie == Tying::untied) f("proj", proj);
  }
};

}  // namespace cerberus::mtl
