// Gradient accumulation: k micro-batches of size b give the gradient of one batch of size k*b.
// backward() adds into .grad(), so the only things to get right are the loss scale (each
// micro-batch's mean loss times 1/k, so the sum of the k gradients is the gradient of the mean
// over k*b) and when to step. This helper holds both:
//
//   optim::GradientAccumulation accumulate(4);
//   for (auto& micro : micro_batches) {
//     Tensor<float> loss = model_loss(micro) * accumulate.loss_scale();   // mean over the micro-batch
//     loss.backward();
//     if (accumulate.micro_batch_done()) {        // true every 4th call
//       optim::clip_grad_norm(params, 1.0);
//       optimizer.step();
//       optimizer.zero_grad();
//     }
//   }
//
// With micro-batches of unequal size (token-level losses, a short last batch), scale each
// micro-batch's summed loss by 1 / (tokens in the whole batch) instead of using loss_scale().
#pragma once

#include <string>

#include "cerberus/core/error.hpp"

namespace cerberus::optim {

class GradientAccumulation {
 public:
  explicit GradientAccumulation(int micro_batches) : k_(micro_batches) {
    if (micro_batches < 1)
      throw ValueError("[GradientAccumulation] micro_batches must be >= 1, got " + std::to_string(micro_batches));
  }
  // The factor for each micro-batch's mean loss: 1 / micro_batches.
  double loss_scale() const { return 1.0 / static_cast<double>(k_); }
  // Counts one micro-batch (after its backward); true when this completes a batch: step now.
  bool micro_batch_done() {
    if (++pending_ < k_) return false;
    pending_ = 0;
    return true;
  }
  int micro_batches() const { return k_; }
  // Micro-batches counted since the last completed batch.
  int pending() const { return pending_; }

 private:
  int k_;
  int pending_ = 0;
};

}  // namespace cerberus::optim
