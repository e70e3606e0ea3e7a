// mtl::Batch: one batch of examples of several tasks, and the routing of its rows to tasks.
//
// Legend: B = examples, T = time, K = regression outputs.
//   ids           int64 [B, T]   token ids
//   padding       uint8 [B, T]   nonzero = padded (ops/attention.hpp's convention), or undefined
//   task_id       int64 [B]      the task of each example: its index in the model's task list
//                                (model.task_index<"name">())
//   labels        int64 [B]      class per example (sequence classification); other tasks' rows: any
//   token_labels  int64 [B, T]   target per token, -100 = no loss (token classification, LM head)
//   values        T [B] / [B, K] regression targets
//   segments      int64 [B, T]   packed rows (sequence packing, nn/packing.hpp): the example each
//                                token belongs to; undefined = one example per row
//   positions     int64 [B, T]   packed rows: each token's position inside its own example
// A packed row holds several examples of ONE task (instruct::pack_lm): task_id is per row, and
// only per-token heads (LMHead, TokenClassifier) take packed rows; a head that pools a whole row
// (SequenceClassifier, Regression) refuses them (mtl::Model).
// A field a task does not use may be undefined, or hold anything in that task's rows.
//
// to<U>() is the same batch for a model of element type U (only `values` changes type; a bf16
// model's batch from a float source). to<D2>() is the same batch on device D2: every defined
// field copied (Batch<T, cuda> for a model over a cuda trunk; batches are built on the host and
// moved once per step, as train::Trainer does).
//
// route(task_id, n_tasks) gives the rows of each task as int64 [B_k] index tensors on the batch's
// device, nullopt for a task with no example in the batch; select(rows) takes those rows of every
// defined field (index_select on the batch's device).
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <type_traits>
#include <vector>

#include "cerberus/core/error.hpp"
#include "cerberus/ops/indexing.hpp"
#include "cerberus/tensor/factories.hpp"
#include "cerberus/tensor/tensor.hpp"

namespace cerberus::mtl {

namespace detail {
// A host tensor on device D: t itself on the cpu, else a copy.
template <Device D, Element U>
Tensor<U, D> host_to(const Tensor<U, cpu>& t) {
  if constexpr (std::is_same_v<D, cpu>) return t;
  else return t.template to<D>();
}
}  // namespace detail

template <Element T = float, Device D = cpu>
struct Batch {
  using device_type = D;
  Tensor<std::int64_t, D> ids;
  Tensor<std::uint8_t, D> padding;
  Tensor<std::int64_t, D> task_id;
  Tensor<std::int64_t, D> labels;
  Tensor<std::int64_t, D> token_labels;
  Tensor<T, D> values;
  Tensor<std::int64_t, D> segments;
  Tensor<std::int64_t, D> positions;

  Index size() const { return ids.defined() ? ids.size(0) : 0; }
  // Whether rows hold several packed examples (segments or positions given).
  bool packed() const { return segments.defined() || positions.defined(); }

  // The examples at `rows` (int64 [k]), every defined field (task_id included).
  Batch select(const Tensor<std::int64_t, D>& rows) const {
    Batch out;
    auto take = [&](const auto& field, auto& dst) {
      if (field.defined()) dst = index_select(field, 0, rows);
    };
    take(ids, out.ids);
    take(padding, out.padding);
    take(task_id, out.task_id);
    take(labels, out.labels);
    take(token_labels, out.token_labels);
    take(values, out.values);
    take(segments, out.segments);
    take(positions, out.positions);
    return out;
  }

  // The same examples with `values` converted to U (every other field shared).
  template <Element U>
  Batch<U, D> to() const {
    if constexpr (std::is_same_v<U, T>) {
      return *this;
    } else {
      return {ids, padding, task_id, labels, token_labels, values.defined() ? values.template to<U>() : Tensor<U, D>{}, segments, positions};
    }
  }

  // The same examples on device D2 (every defined field copied; this batch itself when D2 == D).
  template <Device D2>
  Batch<T, D2> to() const {
    if constexpr (std::is_same_v<D2, D>) {
      return *this;
    } else {
      auto move = [](const auto& field) {
        using F = typename std::remove_cvref_t<decltype(field)>::value_type;
        return field.defined() ? field.template to<D2>() : Tensor<F, D2>{};
      };
      return {move(ids), move(padding), move(task_id), move(labels), move(token_labels), move(values), move(segments), move(positions)};
    }
  }
};

// Row indices of each task's examples, in batch order, on task_id's device; nullopt where a task
// has none. Which tasks are present decides which heads and trunks run (host control flow), so
// task_id is read on the host: on a device, one copy of B int64 values per batch (and the index
// tensors copied back), a synchronisation the step needs anyway to know what to launch.
template <Device D>
std::vector<std::optional<Tensor<std::int64_t, D>>> route(const Tensor<std::int64_t, D>& task_id, Index batch, std::size_t n_tasks) {
  if (!task_id.defined() || task_id.rank() != 1 || task_id.size(0) != batch)
    throw ShapeError("[mtl::route] task_id must be int64 [B] with B = " + std::to_string(batch) + " examples, got " +
                     (task_id.defined() ? task_id.shape().to_string() : std::string("an undefined tensor")));
  const std::vector<std::int64_t> ids = task_id.to_vector();
  std::vector<std::vector<std::int64_t>> rows(n_tasks);
  for (std::size_t i = 0; i < ids.size(); ++i) {
    if (ids[i] < 0 || static_cast<std::size_t>(ids[i]) >= n_tasks)
      throw IndexError("[mtl::route] example " + std::to_string(i) + " has task_id " + std::to_string(ids[i]) + ", but the model has " +
                       std::to_string(n_tasks) + " tasks (task_id [" + std::to_string(batch) + "])");
    rows[static_cast<std::size_t>(ids[i])].push_back(static_cast<std::int64_t>(i));
  }
  std::vector<std::optional<Tensor<std::int64_t, D>>> out(n_tasks);
  for (std::size_t k = 0; k < n_tasks; ++k)
    if (!rows[k].empty()) out[k] = detail::host_to<D>(from_vector<std::int64_t>(rows[k]));
  return out;
}

}  // namespace cerberus::mtl
