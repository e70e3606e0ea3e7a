// Task mixtures (seqio-style): which task the next training example comes from, and which example.
//
// Rates (unnormalised; a Mixture normalises them):
//   examples_proportional(tasks, maximum)  rate_i = min(n_i, maximum)        (seqio mixing_rate_num_examples)
//   temperature(tasks, T, maximum)         rate_i = min(n_i, maximum)^(1/T)  (T = 1: proportional, T -> inf: equal)
//   equal(tasks)                           rate_i = 1
//   Mixture::add(task or mixture, rate)    explicit rates
// A mixture may be a member of another: its rate is split among its leaves by its own
// normalised rates (leaf_rates() flattens; a task reached twice gets the sum).
//
// MixtureSampler draws (task, example) pairs: the task from the leaf rates with a Philox
// Generator, the example by walking a seeded shuffled order of that task's n examples, reshuffled
// each epoch (the order of epoch e depends only on (seed, task, e), so it is recomputed, never
// stored). state() is small - generator (seed, offset), per-task cursor and epoch - and
// save_state()/restore_state() write it as strings into a training-state metadata map, so a run
// resumed mid-epoch continues with the identical sequence. pick_template(draw, n) chooses a
// template per draw from the draw alone.
#pragma once

#include <algorithm>
#include <charconv>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <system_error>
#include <utility>
#include <vector>

#include "cerberus/core/error.hpp"
#include "cerberus/core/random.hpp"

namespace cerberus::instruct {

// A task as a mixture sees it: its name, its id in the model's task list, and how many examples.
struct TaskSource {
  std::string name;
  std::int64_t task_id = 0;
  std::int64_t num_examples = 0;
};

struct LeafRate {
  TaskSource task;
  double rate = 0;  // normalised: the leaves of a mixture sum to 1
};

class Mixture {
 public:
  explicit Mixture(std::string name = "mixture") : name_(std::move(name)) {}

  const std::string& name() const { return name_; }

  Mixture& add(TaskSource task, double rate) {
    check_rate(rate, task.name);
    if (task.num_examples <= 0)
      throw ValueError("[instruct::Mixture] " + name_ + ": task '" + task.name + "' has " + std::to_string(task.num_examples) +
                       " examples; a mixed task needs at least one");
    members_.push_back({std::move(task), nullptr, rate});
    return *this;
  }
  Mixture& add(const Mixture& sub, double rate) {
    check_rate(rate, sub.name());
    if (sub.members_.empty()) throw ValueError("[instruct::Mixture] " + name_ + ": member mixture '" + sub.name() + "' is empty");
    members_.push_back(Member{TaskSource{sub.name(), -1, 0}, std::make_shared<Mixture>(sub), rate});
    return *this;
  }

  // Total examples over the leaves (a task reached twice counts once).
  std::int64_t num_examples() const {
    std::int64_t n = 0;
    for (const auto& l : leaf_rates()) n += l.task.num_examples;
    return n;
  }

  // The flattened, normalised rates of every task, in first-reached order.
  std::vector<LeafRate> leaf_rates() const {
    if (members_.empty()) throw ValueError("[instruct::Mixture] " + name_ + ": no members");
    double total = 0;
    for (const auto& m : members_) total += m.rate;
    if (!(total > 0)) throw ValueError("[instruct::Mixture] " + name_ + ": every rate is 0");
    std::vector<LeafRate> out;
    auto merge = [&](const TaskSource& t, double r) {
      for (auto& l : out)
        if (l.task.name == t.name) {
          if (l.task.task_id != t.task_id || l.task.num_examples != t.num_examples)
            throw ValueError("[instruct::Mixture] " + name_ + ": task '" + t.name + "' appears twice with different ids or sizes");
          l.rate += r;
          return;
        }
      out.push_back({t, r});
    };
    for (const auto& m : members_) {
      const double share = m.rate / total;
      if (m.sub)
        for (const auto& l : m.sub->leaf_rates()) merge(l.task, share * l.rate);
      else
        merge(m.task, share);
    }
    return out;
  }

 private:
  struct Member {
    TaskSource task;
    std::shared_ptr<const Mixture> sub;
    double rate;
  };
  void check_rate(double rate, const std::string& who) const {
    if (!(rate >= 0) || !std::isfinite(rate))
      throw ValueError("[instruct::Mixture] " + name_ + ": rate of '" + who + "' must be finite and >= 0, got " + std::to_string(rate));
  }
  std::string name_;
  std::vector<Member> members_;
};

inline constexpr std::int64_t no_maximum = std::numeric_limits<std::int64_t>::max();

// rate_i = min(n_i, maximum)^(1/temperature).
inline Mixture temperature(const std::vector<TaskSource>& tasks, double temperature, std::int64_t maximum = no_maximum,
                           std::string name = "mixture") {
  if (!(temperature > 0) || !std::isfinite(temperature))
    throw ValueError("[instruct::temperature] temperature must be finite and > 0, got " + std::to_string(temperature));
  if (maximum <= 0) throw ValueError("[instruct::temperature] maximum must be > 0, got " + std::to_string(maximum));
  Mixture m(std::move(name));
  for (const auto& t : tasks)
    m.add(t, std::pow(static_cast<double>(std::min(t.num_examples, maximum)), 1.0 / temperature));
  return m;
}
// rate_i = min(n_i, maximum).
inline Mixture examples_proportional(const std::vector<TaskSource>& tasks, std::int64_t maximum = no_maximum,
                                     std::string name = "mixture") {
  if (maximum <= 0) throw ValueError("[instruct::examples_proportional] maximum must be > 0, got " + std::to_string(maximum));
  Mixture m(std::move(name));
  for (const auto& t : tasks) m.add(t, static_cast<double>(std::min(t.num_examples, maximum)));
  return m;
}
inline Mixture equal(const std::vector<TaskSource>& tasks, std::string name = "mixture") {
  Mixture m(std::move(name));
  for (const auto& t : tasks) m.add(t, 1.0);
  return m;
}

// One draw: leaf `leaf` of leaf_rates(), its task id, and the index of the example within the task.
struct Draw {
  std::size_t leaf = 0;
  std::int64_t task_id = 0;
  std::int64_t example = 0;
  std::int64_t epoch = 0;  // of that task
};

// Which of `n_templates` templates renders this draw: uniform, and a pure function of (seed, task,
// example, epoch), so an example gets a different template each epoch and a resumed run picks the
// same ones without any saved state.
inline std::size_t pick_template(const Draw& d, std::size_t n_templates, std::uint64_t seed = 0) {
  if (n_templates == 0) throw ValueError("[instruct::pick_template] a task needs at least one template");
  const auto b = Philox::generate(seed ^ (static_cast<std::uint64_t>(d.task_id) * 0x9E3779B97F4A7C15ull),
                                  (static_cast<std::uint64_t>(d.epoch) << 40) ^ static_cast<std::uint64_t>(d.example));
  return static_cast<std::size_t>((static_cast<std::uint64_t>(b.v[0]) * n_templates) >> 32);
}

// The whole position of a sampler.
struct MixtureState {
  std::uint64_t seed = 0;    // the generator's seed (examples are shuffled with seeds derived from it)
  std::uint64_t offset = 0;  // Philox blocks consumed choosing tasks
  std::vector<std::int64_t> cursor;  // per leaf: position within the current epoch's order
  std::vector<std::int64_t> epoch;   // per leaf: epochs completed
  bool operator==(const MixtureState&) const = default;
};

class MixtureSampler {
 public:
  MixtureSampler(const Mixture& mixture, std::uint64_t seed) : leaves_(mixture.leaf_rates()), gen_(seed) {
    double acc = 0;
    for (const auto& l : leaves_) cumulative_.push_back(acc += l.rate);
    cursor_.assign(leaves_.size(), 0);
    epoch_.assign(leaves_.size(), 0);
    orders_.resize(leaves_.size());
  }

  const std::vector<LeafRate>& leaves() const { return leaves_; }

  Draw next() {
    const double u = gen_.uniform() * cumulative_.back();
    std::size_t k = 0;
    while (k + 1 < cumulative_.size() && !(u < cumulative_[k])) ++k;
    while (leaves_[k].rate == 0 && k > 0) --k;  // never land on a zero-rate leaf by rounding
    const std::vector<std::int64_t>& ord = order(k);
    Draw d{k, leaves_[k].task.task_id, ord[static_cast<std::size_t>(cursor_[k])], epoch_[k]};
    if (++cursor_[k] == leaves_[k].task.num_examples) {
      cursor_[k] = 0;
      ++epoch_[k];
    }
    return d;
  }

  MixtureState state() const { return {gen_.seed(), gen_.offset(), cursor_, epoch_}; }
  void set_state(const MixtureState& s) {
    if (s.cursor.size() != leaves_.size() || s.epoch.size() != leaves_.size())
      throw ValueError("[instruct::MixtureSampler] state has " + std::to_string(s.cursor.size()) + " tasks, the mixture " +
                       std::to_string(leaves_.size()));
    for (std::size_t k = 0; k < leaves_.size(); ++k)
      if (s.cursor[k] < 0 || s.cursor[k] >= leaves_[k].task.num_examples || s.epoch[k] < 0)
        throw ValueError("[instruct::MixtureSampler] state: task '" + leaves_[k].task.name + "' cursor " + std::to_string(s.cursor[k]) +
                         " outside [0, " + std::to_string(leaves_[k].task.num_examples) + ") or negative epoch");
    gen_.set_state(s.seed, s.offset);
    cursor_ = s.cursor;
    epoch_ = s.epoch;
    for (auto& o : orders_) o.reset();
  }

  // Writes the state as "<prefix>seed", "<prefix>offset", "<prefix>tasks" (names, for checking)
  // and "<prefix>cursor.<task>", "<prefix>epoch.<task>".
  void save_state(std::map<std::string, std::string>& meta, const std::string& prefix = "mixture.") const {
    meta[prefix + "seed"] = std::to_string(gen_.seed());
    meta[prefix + "offset"] = std::to_string(gen_.offset());
    std::string names;
    for (std::size_t k = 0; k < leaves_.size(); ++k) {
      names += (k ? "," : "") + leaves_[k].task.name;
      meta[prefix + "cursor." + leaves_[k].task.name] = std::to_string(cursor_[k]);
      meta[prefix + "epoch." + leaves_[k].task.name] = std::to_string(epoch_[k]);
    }
    meta[prefix + "tasks"] = names;
  }
  void restore_state(const std::map<std::string, std::string>& meta, const std::string& prefix = "mixture.") {
    auto get = [&](const std::string& key) -> std::uint64_t {
      const auto it = meta.find(prefix + key);
      if (it == meta.end()) throw ValueError("[instruct::MixtureSampler::restore_state] metadata has no field '" + prefix + key + "'");
      const std::string& v = it->second;
      std::uint64_t x = 0;
      const auto [end, ec] = std::from_chars(v.data(), v.data() + v.size(), x);
      if (v.empty() || ec != std::errc() || end != v.data() + v.size())
        throw ValueError("[instruct::MixtureSampler::restore_state] field '" + prefix + key + "': expected a non-negative decimal integer, found \"" +
                         v + "\"");
      return x;
    };
    std::string names;
    for (std::size_t k = 0; k < leaves_.size(); ++k) names += (k ? "," : "") + leaves_[k].task.name;
    const auto it = meta.find(prefix + "tasks");
    if (it == meta.end() || it->second != names)
      throw ValueError("[instruct::MixtureSampler::restore_state] field '" + prefix + "tasks' is \"" +
                       (it == meta.end() ? std::string("<missing>") : it->second) + "\", this mixture's tasks are \"" + names + "\"");
    MixtureState s;
    s.seed = get("seed");
    s.offset = get("offset");
    for (const auto& l : leaves_) {
      s.cursor.push_back(static_cast<std::int64_t>(get("cursor." + l.task.name)));
      s.epoch.push_back(static_cast<std::int64_t>(get("epoch." + l.task.name)));
    }
    set_state(s);
  }

  // The shuffled order of leaf k's examples in its current epoch (Fisher-Yates over Philox,
  // seeded by (seed, task, epoch)).
  const std::vector<std::int64_t>& order(std::size_t k) {
    auto& o = orders_[k];
    if (!o || o->first != epoch_[k]) {
      std::vector<std::int64_t> v(static_cast<std::size_t>(leaves_[k].task.num_examples));
      for (std::size_t i = 0; i < v.size(); ++i) v[i] = static_cast<std::int64_t>(i);
      std::uint64_t h = gen_.seed() ^ 0x6a09e667f3bcc909ull;
      for (char c : leaves_[k].task.name) h = (h ^ static_cast<unsigned char>(c)) * 0x100000001b3ull;
      Generator g(h ^ (static_cast<std::uint64_t>(epoch_[k]) * 0x9E3779B97F4A7C15ull));
      for (std::size_t i = v.size(); i > 1; --i) {
        const std::size_t j = static_cast<std::size_t>((static_cast<std::uint64_t>(g.next_u32()) * i) >> 32);
        std::swap(v[i - 1], v[j]);
      }
      o.emplace(epoch_[k], std::move(v));
    }
    return o->second;
  }

 private:
  std::vector<LeafRate> leaves_;
  std::vector<double> cumulative_;
  Generator gen_;
  std::vector<std::int64_t> cursor_, epoch_;
  std::vector<std::optional<std::pair<std::int64_t, std::vector<std::int64_t>>>> orders_;
};

}  // namespace cerberus::instruct
