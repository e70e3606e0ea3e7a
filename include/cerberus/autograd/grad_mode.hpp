// Whether ops record the graph. Per thread, like torch.no_grad().
#pragma once

namespace cerberus {

namespace autograd {
inline bool& grad_mode_flag() {
  thread_local bool enabled = true;
  return enabled;
}
}  // namespace autograd

inline bool is_grad_enabled() { return autograd::grad_mode_flag(); }

// Within its scope no op records a graph (evaluation, optimizer updates).
class NoGradGuard {
 public:
  NoGradGuard() : previous_(autograd::grad_mode_flag()) { autograd::grad_mode_flag() = false; }
  ~NoGradGuard() { autograd::grad_mode_flag() = previous_; }
  NoGradGuard(const NoGradGuard&) = delete;
  NoGradGuard& operator=(const NoGradGuard&) = delete;

 private:
  bool previous_;
};

}  // namespace cerberus
