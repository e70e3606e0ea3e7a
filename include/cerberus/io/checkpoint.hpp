// Model checkpoints: a ParameterList saved to and loaded from one safetensors file, by name.
//
// Saving is atomic (see AtomicFile): a failed or interrupted save leaves the previous checkpoint
// as it was. Loading first checks every name, shape and dtype against the model and reports all
// problems in one error, one per line, before it writes a single parameter; only then does it
// copy the file's values into the existing parameter tensors (views included), in place, so
// optimizers and tied weights keep pointing at the same storage.
//
// F32 <-> BF16 conversion happens only when asked for: StoreAs::bfloat16 when saving float
// parameters, LoadOptions::convert_bfloat16 when the file and the model disagree on exactly that.
// Tensors on another device go through .to<cpu>() and back, so the code is the same for cuda.
#pragma once

#include <cstddef>
#include <map>
#include <string>
#include <type_traits>
#include <vector>

#include "cerberus/autograd/grad_mode.hpp"
#include "cerberus/io/safetensors.hpp"
#include "cerberus/nn/parameter.hpp"

namespace cerberus::io {

enum class StoreAs {
  same,      // each parameter in its own element type
  bfloat16,  // float parameters stored as BF16 (half the size; rounds to nearest even)
};

struct LoadOptions {
  bool strict = true;             // false: names missing from the file or unknown to the model are allowed (and skipped)
  bool convert_bfloat16 = false;  // true: a BF16 tensor may load into a float parameter, and F32 into bfloat16
};

namespace detail {
template <Element T, Device D>
Tensor<T> to_host(const Tensor<T, D>& t) {
  if constexpr (std::is_same_v<D, cpu>) return t.detach();
  else return t.detach().template to<cpu>();
}

// Copies a host tensor of the same shape into `dst` (any layout, any device).
template <Element T, Device D>
void copy_into(const Tensor<T, D>& dst, const Tensor<T>& host) {
  if (dst.numel() == 0) return;
  NoGradGuard no_grad;  // parameters require grad; this copy is not part of any graph
  if constexpr (std::is_same_v<D, cpu>) {
    Backend<cpu>::template convert<T, T>(dst.data(), dst.strides(), host.data(), host.strides(), dst.shape());
  } else {
    const Tensor<T, D> src = host.template to<D>();
    Backend<D>::template convert<T, T>(dst.data(), dst.strides(), src.data(), src.strides(), dst.shape());
  }
}

template <Element T, Device D>
void check_unique_names(const nn::ParameterList<T, D>& params, const std::string& op) {
  std::map<std::string_view, std::size_t> seen;
  for (std::size_t i = 0; i < params.size(); ++i) {
    const auto [it, fresh] = seen.emplace(params[i].name, i);
    if (!fresh)
      throw ValueError("[" + op + "] parameter name " + quote_name(params[i].name) + " appears twice (entries " + std::to_string(it->second) +
                       " and " + std::to_string(i) + ")");
  }
}
}  // namespace detail

// Saves `params` (and string metadata) to `path`, replacing any previous file atomically.
template <Element T, Device D>
void save_checkpoint(const std::string& path, const nn::ParameterList<T, D>& params, const Metadata& metadata = {},
                     StoreAs store = StoreAs::same) {
  if constexpr (!std::is_same_v<T, float>)
    if (store == StoreAs::bfloat16)
      throw ValueError("[save_checkpoint] StoreAs::bfloat16 converts float parameters; these are " + std::string(dtype_name<T>()));
  detail::check_unique_names(params, "save_checkpoint");
  std::vector<NamedTensor> tensors;
  tensors.reserve(params.size());
  for (const auto& p : params) {
    if (!p.tensor.defined()) throw ValueError("[save_checkpoint] parameter " + detail::quote_name(p.name) + " is undefined");
    Tensor<T> host = detail::to_host(p.tensor);
    if constexpr (std::is_same_v<T, float>)
      if (store == StoreAs::bfloat16) {
        tensors.push_back({p.name, host.template to<bfloat16>()});
        continue;
      }
    tensors.push_back({p.name, std::move(host)});
  }
  save_safetensors(path, tensors, metadata);
}

// Loads `path` into the existing tensors of `into` and returns the file's metadata. Throws one
// FileError listing every mismatch (missing, unexpected, shape, dtype) before changing anything.
template <Element T, Device D>
Metadata load_checkpoint(const std::string& path, const nn::ParameterList<T, D>& into, const LoadOptions& options = {}) {
  detail::check_unique_names(into, "load_checkpoint");
  const SafetensorsFile file(path);
  constexpr Dtype model_dtype = dtype_of<T>();
  constexpr bool convertible = model_dtype == Dtype::F32 || model_dtype == Dtype::BF16;
  const auto shape_of = [](const Shape& s) { return std::vector<std::int64_t>(s.begin(), s.end()); };

  std::vector<std::string> problems;
  std::map<std::string_view, bool> in_model;
  for (const auto& p : into) {
    in_model.emplace(p.name, true);
    const std::vector<std::int64_t> model_shape = shape_of(p.tensor.shape());
    if (!file.contains(p.name)) {
      if (options.strict)
        problems.push_back("missing in the file: " + detail::quote_name(p.name) + " (the model has shape " + detail::shape_string(model_shape) +
                           ", " + std::string(dtype_name<T>()) + ")");
      continue;
    }
    const TensorInfo& info = file.info(p.name);
    if (info.shape != model_shape)
      problems.push_back("shape mismatch: " + detail::quote_name(p.name) + " is " + detail::shape_string(info.shape) + " in the file, " +
                         detail::shape_string(model_shape) + " in the model");
    if (info.dtype != model_dtype) {
      const bool pair = convertible && (info.dtype == Dtype::F32 || info.dtype == Dtype::BF16);
      if (!(pair && options.convert_bfloat16))
        problems.push_back("dtype mismatch: " + detail::quote_name(p.name) + " is " + std::string(to_string(info.dtype)) + " in the file, " +
                           std::string(dtype_name<T>()) + " in the model" + (pair ? " (set LoadOptions::convert_bfloat16 to convert)" : ""));
    }
  }
  if (options.strict)
    for (const auto& info : file.tensors())
      if (!in_model.count(info.name))
        problems.push_back("unexpected in the file: " + detail::quote_name(info.name) + " (shape " + detail::shape_string(info.shape) + ", " +
                           std::string(to_string(info.dtype)) + "), not a parameter of the model");
  if (!problems.empty()) {
    std::string message = "[load_checkpoint] " + path + " does not match the model (" + std::to_string(problems.size()) +
                          (problems.size() == 1 ? " problem" : " problems") + "; nothing was loaded):";
    for (const auto& line : problems) message += "\n  " + line;
    throw FileError(message);
  }

  for (const auto& p : into) {
    if (!file.contains(p.name)) continue;
    const Dtype stored = file.info(p.name).dtype;
    if constexpr (std::is_same_v<T, float>) {
      if (stored == Dtype::BF16) {
        detail::copy_into(p.tensor, file.tensor<bfloat16>(p.name).template to<float>());
        continue;
      }
    } else if constexpr (std::is_same_v<T, bfloat16>) {
      if (stored == Dtype::F32) {
        detail::copy_into(p.tensor, file.tensor<float>(p.name).template to<bfloat16>());
        continue;
      }
    }
    detail::copy_into(p.tensor, file.tensor<T>(p.name));
  }
  return file.metadata();
}

}  // namespace cerberus::io
