// Shared machinery of the multi-task CUDA tests (test_mtl*.cu): a small four-task model type over
// an nn::Encoder on either device (one task per head kind), mixed batches built on the host, and
// `compare_training`, which trains a cpu model and its cuda twin (the same weights, copied by
// name) for a few steps on the same batches and compares, step by step, every task loss, the
// weighting's report (weights, total, gradient cosines), every trainable parameter's gradient
// and every parameter after the optimizer's update.
//
// Tolerances: those of test_transformer_step.cu. Float: losses 1e-5 relative, gradients 1e-4
// normwise, parameters 1e-4 relative after the update. bf16: losses 1e-2, gradients 5e-2
// normwise, parameters 1e-2. NaN never passes (check::max_error and normwise_error make it
// infinite), and an undefined gradient on one device only fails.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <string>
#include <type_traits>
#include <vector>

#include "cerberus/mtl.hpp"
#include "cerberus/mtl/weighting.hpp"
#include "check.cuh"

namespace mtl_check {

using namespace cerberus;

// Four tasks, one per head kind; task ids 0..3 in this order.
template <class Tr, class Sharing, class Weighting, class T = float>
using Model = mtl::Model<Tr, Sharing, Weighting,                                             //
                         mtl::Task<"cls", mtl::SequenceClassifier<3, mtl::Pooling::mean, T>>,  // pooled, padding-aware
                         mtl::Task<"tag", mtl::TokenClassifier<4, T>>,                         // per token, padding ignored
                         mtl::Task<"reg", mtl::Regression<1, mtl::Pooling::last, T>>,          // last non-padded position
                         mtl::Task<"lm", mtl::LMHead<mtl::Tying::tied, T>>>;                   // tied to the trunk's embedding

// Groups for Hierarchical / Soft / CrossStitch.
using Understand = mtl::Group<"understand", "cls", "reg">;
using Generate = mtl::Group<"generate", "tag", "lm">;

inline nn::TransformerConfig config() {
  nn::TransformerConfig c;
  c.vocab_size = 29, c.d_model = 16, c.n_layers = 2, c.n_heads = 2, c.d_ff = 32, c.max_seq_len = 8;
  c.tie_embeddings = true;
  return c;
}

// B rows of T = 8 tokens with the given task ids; row i has pad[i] padded positions at its end.
template <class T = float>
mtl::Batch<T> make_batch(const std::vector<std::int64_t>& tasks, const std::vector<Index>& pad, std::uint64_t seed) {
  const Index b = static_cast<Index>(tasks.size()), t = 8, vocab = config().vocab_size;
  Generator gen(seed);
  const auto u = uniform<double>(Shape{b, t}, 0.0, 1.0, gen).to_vector();
  const auto v = uniform<double>(Shape{b}, -1.0, 1.0, gen).to_vector();
  std::vector<std::int64_t> ids(static_cast<std::size_t>(b * t)), token_labels(ids.size()), labels(static_cast<std::size_t>(b));
  std::vector<std::uint8_t> padding(ids.size(), 0);
  std::vector<T> values(static_cast<std::size_t>(b));
  for (Index i = 0; i < b; ++i) {
    for (Index j = 0; j < t; ++j) {
      const auto at = static_cast<std::size_t>(i * t + j);
      ids[at] = 1 + static_cast<std::int64_t>(u[at] * static_cast<double>(vocab - 1));
      // token classes for "tag" (4 classes), next ids for "lm" (< V): one field serves both
      token_labels[at] = tasks[static_cast<std::size_t>(i)] == 1 ? ids[at] % 4 : (ids[at] * 3 + 1) % vocab;
      if (j == 2) token_labels[at] = -100;  // an ignored target
      if (j >= t - pad[static_cast<std::size_t>(i)]) padding[at] = 1, ids[at] = 0;
    }
    labels[static_cast<std::size_t>(i)] = (ids[static_cast<std::size_t>(i * t)] + i) % 3;
    values[static_cast<std::size_t>(i)] = static_cast<T>(static_cast<float>(v[static_cast<std::size_t>(i)]));
  }
  mtl::Batch<T> batch;
  batch.ids = from_vector<std::int64_t>(ids, Shape{b, t});
  batch.padding = from_vector<std::uint8_t>(padding, Shape{b, t});
  batch.task_id = from_vector<std::int64_t>(tasks);
  batch.labels = from_vector<std::int64_t>(labels);
  batch.token_labels = from_vector<std::int64_t>(token_labels, Shape{b, t});
  batch.values = from_vector<T>(values);
  return batch;
}

// The batches of compare_training: every task mixed with padding; one without task "reg" (an
// absent task: no loss, no head gradient); the first again (a weighting's statistics move on).
template <class T = float>
std::vector<mtl::Batch<T>> batches() {
  return {make_batch<T>({0, 1, 2, 3, 0, 3, 1, 2, 0, 3}, {0, 2, 1, 0, 3, 0, 0, 2, 1, 1}, 11),
          make_batch<T>({3, 0, 1, 0, 3, 1}, {1, 0, 0, 2, 0, 3}, 12),
          make_batch<T>({0, 1, 2, 3, 0, 3, 1, 2, 0, 3}, {0, 2, 1, 0, 3, 0, 0, 2, 1, 1}, 11)};
}

// Gives every parameter of `device` the value of the same-named parameter of `host`, keeping
// whether it is trainable (a frozen trunk stays frozen).
template <class HostModule, class DeviceModule>
void copy_model(const HostModule& host, DeviceModule& device) {
  const auto from = host.named_parameters();
  std::size_t copied = 0;
  device.visit_parameters("", [&](const std::string& name, auto& p) {
    for (const auto& q : from)
      if (q.name == name) {
        p = q.tensor.detach().template to<cuda>();
        p.set_requires_grad(q.tensor.requires_grad());
        ++copied;
        return;
      }
    check::report(false, "copy_model", "no host parameter named " + name);
  });
  check::report(copied == from.size(), "copy_model", std::to_string(copied) + " of " + std::to_string(from.size()) + " parameters copied");
}

// ||got - want|| / max(||want||, floor): a tensor's normwise error; NaN anywhere is infinite.
template <class T>
double normwise_error(const Tensor<T, cuda>& got, const Tensor<T, cpu>& want, double floor) {
  const auto g = got.to_vector();
  const auto w = want.to_vector();
  if (g.size() != w.size()) return std::numeric_limits<double>::infinity();
  double diff = 0, ref = 0;
  for (std::size_t i = 0; i < g.size(); ++i) {
    const double a = static_cast<double>(static_cast<float>(g[i])), b = static_cast<double>(static_cast<float>(w[i]));
    if (std::isnan(a) || std::isnan(b)) return std::numeric_limits<double>::infinity();
    diff += (a - b) * (a - b);
    ref += b * b;
  }
  return std::sqrt(diff) / std::max({std::sqrt(ref), floor, 1e-30});
}

template <class T>
double norm(const Tensor<T, cpu>& t) {
  double s = 0;
  for (const auto v : t.to_vector()) s += static_cast<double>(static_cast<float>(v)) * static_cast<double>(static_cast<float>(v));
  return std::sqrt(s);
}

inline bool close(double got, double want, double tol) {
  if (std::isnan(want)) return std::isnan(got);  // an absent task: NaN on both sides
  if (std::isnan(got)) return false;
  return std::fabs(got - want) <= tol * std::max(std::fabs(want), 1.0);
}

// The weighting's reports of one step on both devices.
inline void compare_reports(const std::string& name, const mtl::WeightingReport& d, const mtl::WeightingReport& h, double tol) {
  bool ok = d.losses.size() == h.losses.size() && d.weights.size() == h.weights.size() && close(d.total, h.total, tol) &&
            d.gradient_cosine.size() == h.gradient_cosine.size();
  double worst = std::fabs(d.total - h.total);
  for (std::size_t k = 0; ok && k < h.losses.size(); ++k) {
    ok = close(d.losses[k], h.losses[k], tol) && close(d.weights[k], h.weights[k], 10 * tol);
    if (!std::isnan(h.losses[k])) worst = std::max({worst, std::fabs(d.losses[k] - h.losses[k]), std::fabs(d.weights[k] - h.weights[k])});
  }
  // cosines of near-orthogonal gradients are differences of rounded products: compared absolutely
  for (std::size_t i = 0; ok && i < h.gradient_cosine.size(); ++i)
    for (std::size_t j = 0; ok && j < h.gradient_cosine[i].size(); ++j) {
      const double a = d.gradient_cosine[i][j], b = h.gradient_cosine[i][j];
      ok = std::isnan(b) ? std::isnan(a) : (!std::isnan(a) && std::fabs(a - b) <= 10 * tol);
    }
  check::report(ok, name + " report (losses, weights, total, cosines)", "largest difference " + check::fmt(worst) + " (tol " + check::fmt(tol) + ")");
}

struct Tolerance {
  double loss, gradient, parameter;
};
template <class T>
Tolerance tolerance() {
  if constexpr (std::is_same_v<T, float>) return {1e-5, 1e-4, 1e-4};
  else return {1e-2, 5e-2, 1e-2};
}

// Every trainable parameter's gradient (undefined on both devices is a match), judged against the
// largest gradient norm of the model where its own is tiny (a bias whose gradient is exactly
// zero, like the key projection's, holds round-off only).
template <class PH, class PD>
void compare_gradients(const std::string& name, const PH& host, const PD& device, double tol) {
  if (host.size() != device.size()) {
    check::report(false, name + " gradients", "parameter lists differ in length");
    return;
  }
  double scale = 0;
  for (const auto& p : host)
    if (p.tensor.grad().defined()) scale = std::max(scale, norm(p.tensor.grad()));
  int compared = 0, failed = 0;
  double worst = 0;
  std::string worst_name;
  for (std::size_t k = 0; k < host.size(); ++k) {
    const auto gh = host[k].tensor.grad();
    const auto gd = device[k].tensor.grad();
    if (host[k].name != device[k].name || gh.defined() != gd.defined()) {
      check::report(false, name + " gradient " + host[k].name, "defined on one device only, or names differ (" + device[k].name + ")");
      ++failed;
      continue;
    }
    if (!gh.defined()) continue;
    const double e = normwise_error(gd, gh, 1e-3 * scale);
    ++compared;
    if (!(e < tol)) {
      ++failed;
      check::report(false, name + " gradient " + host[k].name, "normwise rel error " + check::fmt(e) + " (tol " + check::fmt(tol) + ")");
    }
    if (!(e <= worst)) worst = e, worst_name = host[k].name;
  }
  if (failed == 0)
    check::report(compared > 0, name + " gradients",
                  std::to_string(compared) + " compared, worst normwise rel error " + check::fmt(worst) + " (" + worst_name + ")");
}

template <class PH, class PD>
void compare_parameters(const std::string& name, const PH& host, const PD& device, double tol) {
  int failed = 0;
  double worst = 0;
  for (std::size_t k = 0; k < host.size() && k < device.size(); ++k) {
    const double e = check::max_error(device[k].tensor.to_vector(), host[k].tensor.to_vector());
    if (!(e < tol)) {
      ++failed;
      check::report(false, name + " parameter " + host[k].name, "max rel error " + check::fmt(e) + " (tol " + check::fmt(tol) + ")");
    }
    worst = std::max(worst, e);
  }
  if (failed == 0 && host.size() == device.size())
    check::report(true, name + " parameters after the update", std::to_string(host.size()) + " tensors, max rel error " + check::fmt(worst));
  else if (host.size() != device.size())
    check::report(false, name + " parameters", "lists differ in length");
}

// Trains HostModel (over nn::Encoder<T, cpu>) and DeviceModel (the same type list over
// nn::Encoder<T, cuda>) from the same weights for the steps of batches<T>(), with an SGD
// optimizer over trainable_parameters() (its update is linear in the gradient, so parameters
// differ after it by lr times the gradients' difference, not by Adam's sign flips), and compares
// everything a step touches. `make_weighting()` gives each model its weighting (the cpu form).
// A non-float model whose weighting has parameters runs them through a float optimizer of
// their own (step with two optimizers).
template <class Sharing, class Weighting, class T = float, class MakeWeighting>
void compare_training(const std::string& name, MakeWeighting make_weighting) {
  using HostModel = Model<nn::Encoder<T, cpu>, Sharing, Weighting, T>;
  using DeviceModel = Model<nn::Encoder<T, cuda>, Sharing, Weighting, T>;
  static_assert(std::is_same_v<typename DeviceModel::device_type, cuda>);
  const Tolerance tol = tolerance<T>();
  const nn::TransformerConfig c = config();
  Generator gen_h(20251129), gen_d(20251129);
  HostModel host(nn::Encoder<T, cpu>(c, gen_h), gen_h, make_weighting());
  DeviceModel device(nn::Encoder<T, cuda>(c, gen_d), gen_d, make_weighting());
  copy_model(host, device);
  const auto params_h = host.trainable_parameters();
  const auto params_d = device.trainable_parameters();
  optim::SGD opt_h(params_h, {.lr = 0.05});
  optim::SGD opt_d(params_d, {.lr = 0.05});
  constexpr bool second = HostModel::needs_weighting_optimizer;
  optim::SGD<cpu, float> wopt_h(host.weighting_parameters(), {.lr = 0.05});
  optim::SGD<cuda, float> wopt_d(device.weighting_parameters(), {.lr = 0.05});

  const auto data = batches<T>();
  for (std::size_t s = 0; s < data.size(); ++s) {
    const std::string step = name + " step " + std::to_string(s + 1);
    const mtl::Batch<T, cuda> batch_d = data[s].template to<cuda>();
    // The step of Model::step, opened up so that the gradients can be read before the update.
    opt_h.zero_grad(), opt_d.zero_grad(), wopt_h.zero_grad(), wopt_d.zero_grad();
    const mtl::TaskLosses losses_h = host.losses(data[s]);
    const mtl::TaskLossesOn<cuda> losses_d = device.losses(batch_d);
    for (std::size_t k = 0; k < losses_h.losses.size(); ++k) {
      if (losses_h.losses[k].has_value() != losses_d.losses[k].has_value()) {
        check::report(false, step + " loss " + losses_h.names[k], "present on one device only");
        continue;
      }
      if (losses_h.losses[k]) check::expect_close(step + " loss " + losses_h.names[k], *losses_d.losses[k], *losses_h.losses[k], tol.loss);
    }
    mtl::WeightingReport report_h = host.weighting().backward(losses_h, host.shared_parameters());
    mtl::WeightingReport report_d = device.weighting().backward(losses_d, device.shared_parameters());
    if (const auto p = host.penalty(); p.defined()) {
      const auto pd = device.penalty();
      check::expect_close(step + " penalty", pd, p, tol.loss);
      p.backward();
      pd.backward();
      report_h.total += static_cast<double>(p.item());
      report_d.total += static_cast<double>(pd.item());
    }
    compare_reports(step, report_d, report_h, tol.loss * 10);
    compare_gradients(step, params_h, params_d, tol.gradient);
    if constexpr (second) compare_gradients(step + " weighting", host.weighting_parameters(), device.weighting_parameters(), tol.gradient);
    opt_h.step(), opt_d.step();
    if constexpr (second) wopt_h.step(), wopt_d.step();
    compare_parameters(step, params_h, params_d, tol.parameter);
    if constexpr (second) compare_parameters(step + " weighting", host.weighting_parameters(), device.weighting_parameters(), tol.parameter);
  }
  // Model::step itself on the device, once: it runs and its report matches the host's.
  const mtl::Batch<T, cuda> batch_d = data[0].template to<cuda>();
  if constexpr (second) {
    compare_reports(name + " Model::step", device.step(batch_d, opt_d, wopt_d), host.step(data[0], opt_h, wopt_h), tol.loss * 10);
  } else {
    compare_reports(name + " Model::step", device.step(batch_d, opt_d), host.step(data[0], opt_h), tol.loss * 10);
  }
  compare_parameters(name + " Model::step", params_h, params_d, tol.parameter);
}

}  // namespace mtl_check
