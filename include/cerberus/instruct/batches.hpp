// InstructionBatches: an endless, resumable stream of training batches drawn from a task mixture.
//
// Each batch holds batch_size examples: for each, the MixtureSampler picks (task, example),
// pick_template chooses one of the task's templates from the draw alone, render() fills it, and
// collate_lm tokenizes the lot into one mixed-task batch (ids, padding, task_id, labels, and
// token targets masked to the answer tokens). Its whole position is the sampler's state, so
// save_state / restore_state (strings, for a training-state file) resume mid-epoch exactly.
//
// A classification task answered through a classifier head (TaskData::answer = label_only) puts
// only the prompt in the sequence: the head reads the prompt's last hidden state and the label is
// the option index, so the answer text must not be in the input. Tasks answered as text
// (generation, or classification by rank over the options) put prompt + answer in the sequence.
//
// Legend: B = batch_size, T = the longest sequence of the batch - 1 (or max_length - 1).
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <utility>
#include <vector>

#include "cerberus/core/error.hpp"
#include "cerberus/instruct/collate.hpp"
#include "cerberus/instruct/mixture.hpp"
#include "cerberus/instruct/templates.hpp"
#include "cerberus/mtl/batch.hpp"

namespace cerberus::instruct {

enum class Answer {
  text,        // prompt then the target text: an LM head learns to write it
  label_only,  // the prompt alone: a classifier head learns the option index
};

// One task of the stream: its spec (templates, options), its examples, and how it is answered.
// The task id of its examples is its position in the list given to InstructionBatches.
struct TaskData {
  TaskSpec spec;
  std::vector<Example> examples;
  Answer answer = Answer::text;
};

struct BatchOptions {
  Index batch_size = 16;
  CollateOptions collate = {};
  std::uint64_t template_seed = 0;  // pick_template's seed
  std::size_t shots = 0;            // few-shot: exemplars drawn from the same task's examples
};

template <TextTokenizer Tok>
class InstructionBatches {
 public:
  // `mixture`'s task ids index `tasks`; the tokenizer must outlive this object.
  InstructionBatches(const Tok& tok, std::vector<TaskData> tasks, const Mixture& mixture, std::uint64_t seed, BatchOptions options = {})
      : tok_(&tok), tasks_(std::move(tasks)), sampler_(mixture, seed), options_(std::move(options)) {
    if (options_.batch_size < 1) throw ValueError("[instruct::InstructionBatches] batch_size must be >= 1, got " + std::to_string(options_.batch_size));
    for (const auto& leaf : sampler_.leaves()) {
      const auto id = leaf.task.task_id;
      if (id < 0 || static_cast<std::size_t>(id) >= tasks_.size())
        throw ValueError("[instruct::InstructionBatches] mixture task '" + leaf.task.name + "' has task id " + std::to_string(id) + ", but " +
                         std::to_string(tasks_.size()) + " tasks were given");
      const TaskData& t = tasks_[static_cast<std::size_t>(id)];
      if (static_cast<std::int64_t>(t.examples.size()) != leaf.task.num_examples)
        throw ValueError("[instruct::InstructionBatches] mixture task '" + leaf.task.name + "' counts " + std::to_string(leaf.task.num_examples) +
                         " examples, its data has " + std::to_string(t.examples.size()));
      if (t.answer == Answer::label_only && t.spec.kind != TaskKind::classification)
        throw ValueError("[instruct::InstructionBatches] task '" + t.spec.name + "' is answered by label but is not a classification task");
    }
  }

  // The rendered text pairs of the next batch (what next() tokenizes); advances the stream.
  std::vector<TextPair> next_pairs() {
    std::vector<TextPair> pairs;
    pairs.reserve(static_cast<std::size_t>(options_.batch_size));
    for (Index i = 0; i < options_.batch_size; ++i) {
      const Draw d = sampler_.next();
      const TaskData& t = tasks_[static_cast<std::size_t>(d.task_id)];
      const Example& ex = t.examples[static_cast<std::size_t>(d.example)];
      const std::size_t tmpl = pick_template(d, t.spec.templates.size(), options_.template_seed);
      std::vector<Example> shots;
      for (std::size_t s = 0; s < options_.shots && t.examples.size() > 1; ++s) {
        // Exemplars: the examples after this one in index order (never the example itself).
        shots.push_back(t.examples[(static_cast<std::size_t>(d.example) + 1 + s) % t.examples.size()]);
      }
      const Rendered r = render(t.spec, tmpl, ex, shots);
      pairs.push_back({r.prompt, t.answer == Answer::label_only ? std::string() : r.target, d.task_id, r.label});
    }
    return pairs;
  }

  // The next batch, as the multi-task model takes it.
  mtl::Batch<float> next() { return collate_lm(next_pairs(), *tok_, options_.collate).to_mtl(); }

  void save_state(std::map<std::string, std::string>& meta) const { sampler_.save_state(meta, "batches."); }
  void restore_state(const std::map<std::string, std::string>& meta) { sampler_.restore_state(meta, "batches."); }

  const std::vector<TaskData>& tasks() const { return tasks_; }
  const MixtureSampler& sampler() const { return sampler_; }

 private:
  const Tok* tok_;
  std::vector<TaskData> tasks_;
  MixtureSampler sampler_;
  BatchOptions options_;
};

}  // namespace cerberus::instruct
