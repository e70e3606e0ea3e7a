// Optimizers on cuda (optim::Kernels<cuda>, backend/cuda/update.cuh) against the CPU: the same
// parameters and the same losses on both devices, several steps of AdamW, Adam (L2), SGD with
// momentum (plain and Nesterov), gradient clipping, and AdamW and grad_norm over 800-1400 float or bf16 tensors
// (several multi-tensor launches per step); parameters after every step within 1e-6
// relative, gradient norms within 1e-6 relative (both sum squares in double, in different orders;
// the gradients themselves may differ by a float rounding where the devices contract a
// multiply-add differently, which the tolerance below leaves room for).
#include <cmath>

#include "check.cuh"

namespace {

using namespace cerberus;
using check::expect_close;
using check::random;

struct Params {
  nn::ParameterList<float, cpu> h;
  nn::ParameterList<float, cuda> d;
  std::vector<Tensor<float, cpu>> coef_h;
  std::vector<Tensor<float, cuda>> coef_d;
};

// Three parameters of awkward sizes (AdamW's default rule decays the two rank-2 ones, not the
// bias), plus per-element loss coefficients.
Params make_params(Generator& gen) {
  Params p;
  const std::vector<std::pair<std::string, Shape>> specs = {{"layer.weight", {37, 129}}, {"layer.bias", {129}}, {"embed.weight", {300, 64}}};
  for (const auto& [name, shape] : specs) {
    auto values = random<float>(shape, gen, -1, 1);
    auto h = values.clone().detach();
    auto d = values.to<cuda>();
    h.set_requires_grad();
    d.set_requires_grad();
    p.h.push_back({name, h});
    p.d.push_back({name, d});
    auto c = random<float>(shape, gen, -2, 2);
    p.coef_h.push_back(c);
    p.coef_d.push_back(c.to<cuda>());
  }
  return p;
}

// loss = sum_k sum(w_k * w_k * c_k + c_k * w_k): gradients that depend on the parameters.
template <class D>
void backward(const nn::ParameterList<float, D>& params, const std::vector<Tensor<float, D>>& coef) {
  Tensor<float, D> total;
  for (std::size_t k = 0; k < params.size(); ++k) {
    const auto& w = params[k].tensor;
    auto term = sum(w * w * coef[k] + coef[k] * w);
    total = total.defined() ? total + term : term;
  }
  total.backward();
}

template <template <Device> class Opt, class Options>
void run_steps(const char* name, Generator& gen, const Options& options, int steps, bool clip = false) {
  Params p = make_params(gen);
  Opt<cpu> opt_h(p.h, options);
  Opt<cuda> opt_d(p.d, options);
  for (int s = 0; s < steps; ++s) {
    opt_h.zero_grad();
    opt_d.zero_grad();
    backward(p.h, p.coef_h);
    backward(p.d, p.coef_d);
    const double nh = optim::grad_norm(p.h), nd = optim::grad_norm(p.d);
    check::report(std::fabs(nd - nh) <= 1e-6 * nh, std::string(name) + " grad_norm step " + std::to_string(s + 1),
                  "cuda " + check::fmt(nd) + ", cpu " + check::fmt(nh) + ", rel " + check::fmt(std::fabs(nd - nh) / nh));
    if (clip) {
      const double ch = optim::clip_grad_norm(p.h, 0.5 * nh), cd = optim::clip_grad_norm(p.d, 0.5 * nh);
      check::report(std::fabs(cd - ch) <= 1e-6 * ch, std::string(name) + " clip_grad_norm step " + std::to_string(s + 1));
    }
    opt_h.step();
    opt_d.step();
    for (std::size_t k = 0; k < p.h.size(); ++k)
      expect_close(std::string(name) + " step " + std::to_string(s + 1) + " " + p.h[k].name, p.d[k].tensor, p.h[k].tensor, 1e-6);
  }
}

// Many parameters in one step: more tensors than one multi-tensor launch holds (about 350 per
// AdamW functor, 1350 for grad_norm's squares), sizes around the 1024-element chunk, rank 1
// and rank 2 (AdamW decays only the second: two update functors, two launch groups, each of
// 400 or 700 tensors here), float weights or bf16 weights with float
// masters. Gradients are exact on both devices (loss = sum(w * c): dL/dw = c), so the weights,
// moments and masters must agree to the update's float rounding.
template <class P>
void run_many(const char* name, Generator& gen, int tensors, int steps) {
  nn::ParameterList<P, cpu> h;
  nn::ParameterList<P, cuda> d;
  std::vector<Tensor<P, cpu>> coef_h;
  std::vector<Tensor<P, cuda>> coef_d;
  const Index sizes[] = {1, 7, 1023, 1024, 1025, 3000};
  for (int k = 0; k < tensors; ++k) {
    const Index n = sizes[k % 6];
    const Shape shape = k % 2 ? Shape{n} : Shape{n, 3};
    auto values = random<P>(shape, gen, -1, 1);
    auto wh = values.clone().detach();
    auto wd = values.template to<cuda>();
    wh.set_requires_grad();
    wd.set_requires_grad();
    h.push_back({"p" + std::to_string(k), wh});
    d.push_back({"p" + std::to_string(k), wd});
    auto c = random<P>(shape, gen, -2, 2);
    coef_h.push_back(c);
    coef_d.push_back(c.template to<cuda>());
  }
  const optim::AdamWOptions options{.lr = 1e-2, .weight_decay = 0.1};
  optim::AdamW opt_h(h, options);
  optim::AdamW opt_d(d, options);
  for (int s = 0; s < steps; ++s) {
    opt_h.zero_grad();
    opt_d.zero_grad();
    for (int k = 0; k < tensors; ++k) {
      sum(h[k].tensor * coef_h[k]).backward();
      sum(d[k].tensor * coef_d[k]).backward();
    }
    const double nh = optim::grad_norm(h), nd = optim::grad_norm(d);
    check::report(std::fabs(nd - nh) <= 1e-6 * nh, std::string(name) + " grad_norm step " + std::to_string(s + 1),
                  "cuda " + check::fmt(nd) + ", cpu " + check::fmt(nh));
    opt_h.step();
    opt_d.step();
  }
  const auto state_h = opt_h.state();
  const auto state_d = opt_d.state();
  check::report(state_h.size() == state_d.size(), std::string(name) + " state entries");
  double worst = 0;
  for (std::size_t k = 0; k < state_h.size() && k < state_d.size(); ++k)
    worst = std::max(worst, check::max_error(state_d[k].tensor.to_vector(), state_h[k].tensor.to_vector()));
  check::report(worst < 1e-5, std::string(name) + " moments and masters after " + std::to_string(steps) + " steps",
                "max rel error " + check::fmt(worst) + " over " + std::to_string(state_h.size()) + " state tensors");
  worst = 0;
  for (int k = 0; k < tensors; ++k) worst = std::max(worst, check::max_error(d[k].tensor.to_vector(), h[k].tensor.to_vector()));
  // bf16 weights are the masters rounded: a master a float rounding from a bf16 tie may round the
  // other way, one bf16 step (2^-8 relative).
  const double tol = std::is_same_v<P, float> ? 1e-5 : 4e-3;
  check::report(worst < tol, std::string(name) + " weights after " + std::to_string(steps) + " steps",
                "max rel error " + check::fmt(worst) + " (tol " + check::fmt(tol) + ") over " + std::to_string(tensors) + " tensors");
}

}  // namespace

int main() {
  return check::run("test_optim (cuda)", [] {
    Generator gen(20240711);
    run_steps<optim::AdamW>("AdamW", gen, optim::AdamWOptions{.lr = 1e-2, .weight_decay = 0.1}, 5);
    run_steps<optim::AdamW>("AdamW clipped", gen, optim::AdamWOptions{.lr = 3e-3, .weight_decay = 0.05}, 3, true);
    run_steps<optim::Adam>("Adam L2", gen, optim::AdamOptions{.lr = 1e-2, .weight_decay = 0.01}, 4);
    run_steps<optim::SGD>("SGD momentum", gen, optim::SGDOptions{.lr = 1e-2, .momentum = 0.9, .weight_decay = 1e-3}, 4);
    run_steps<optim::SGD>("SGD nesterov", gen, optim::SGDOptions{.lr = 1e-2, .momentum = 0.9, .nesterov = true}, 3);
    run_steps<optim::SGD>("SGD plain", gen, optim::SGDOptions{.lr = 0.1}, 2);
    run_many<float>("AdamW, 1400 float tensors", gen, 1400, 2);
    run_many<bfloat16>("AdamW, 800 bf16 tensors with masters", gen, 800, 2);
  });
}
