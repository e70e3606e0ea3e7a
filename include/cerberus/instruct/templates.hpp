// Instruction templates (FLAN-style) and the task registry.
//
// A Template is a (prompt, target) pair of patterns. Placeholders: {input}, {target}, {options},
// {instruction}; "{{" and "}}" are literal braces. A prompt must contain {input} and may not
// contain {target} (it would leak the answer); a target pattern must contain {target}. Templates are
// parsed and validated when a TaskSpec is built or loaded: errors are ValueErrors naming the task,
// the template index, the field (prompt/target) and the column (0-based byte offset).
//
//   TaskSpec s = TaskSpec::make("sentiment", TaskKind::classification, "Is this sentence positive or negative?",
//                               {{"{input}\n\n{instruction}\n{options}", "{target}"}}, {"positive", "negative"});
//   Rendered r = render(s, /*template_index=*/0, {"What a film!", "positive"});
//   // r.prompt = "What a film!\n\nIs this sentence positive or negative?\nOPTIONS:\n- positive\n- negative"
//   // r.target = "positive", r.label = 0
//
// Few-shot: render(spec, t, example, exemplars) renders each exemplar with the same template as
// prompt + answer_separator + target, joins them with exemplar_separator, then the query's prompt.
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "cerberus/core/error.hpp"
#include "cerberus/io/json.hpp"

namespace cerberus::instruct {

enum class TaskKind { generation, classification };

inline const char* kind_name(TaskKind k) { return k == TaskKind::generation ? "generation" : "classification"; }

// The text of one template, before parsing.
struct Template {
  std::string prompt;
  std::string target = "{target}";
};

// One parsed piece of a pattern: literal text, or a placeholder.
struct Segment {
  enum class Kind { text, input, target, options, instruction };
  Kind kind = Kind::text;
  std::string text;  // Kind::text only
};

namespace detail {

inline Segment::Kind placeholder_kind(std::string_view name, bool& ok) {
  ok = true;
  if (name == "input") return Segment::Kind::input;
  if (name == "target") return Segment::Kind::target;
  if (name == "options") return Segment::Kind::options;
  if (name == "instruction") return Segment::Kind::instruction;
  ok = false;
  return Segment::Kind::text;
}

}  // namespace detail

// Parses `pattern`; `where` prefixes errors ("task 'x', template 2, prompt").
inline std::vector<Segment> parse_pattern(std::string_view pattern, const std::string& where) {
  std::vector<Segment> out;
  std::string lit;
  auto flush = [&] {
    if (!lit.empty()) out.push_back({Segment::Kind::text, std::move(lit)});
    lit.clear();
  };
  for (std::size_t i = 0; i < pattern.size(); ++i) {
    const char c = pattern[i];
    if (c == '{') {
      if (i + 1 < pattern.size() && pattern[i + 1] == '{') {
        lit += '{';
        ++i;
        continue;
      }
      const std::size_t close = pattern.find_first_of("{}", i + 1);
      if (close == std::string_view::npos || pattern[close] == '{')
        throw ValueError("[instruct::Template] " + where + ", column " + std::to_string(i) +
                         ": unclosed '{' (write '{{' for a literal brace)");
      const std::string_view name = pattern.substr(i + 1, close - i - 1);
      bool ok = false;
      const Segment::Kind kind = detail::placeholder_kind(name, ok);
      if (!ok)
        throw ValueError("[instruct::Template] " + where + ", column " + std::to_string(i) + ": unknown placeholder {" +
                         std::string(name) + "} (known: {input}, {target}, {options}, {instruction})");
      flush();
      out.push_back({kind, {}});
      i = close;
    } else if (c == '}') {
      if (i + 1 < pattern.size() && pattern[i + 1] == '}') {
        lit += '}';
        ++i;
        continue;
      }
      throw ValueError("[instruct::Template] " + where + ", column " + std::to_string(i) +
                       ": unmatched '}' (write '}}' for a literal brace)");
    } else {
      lit += c;
    }
  }
  flush();
  return out;
}

inline bool has_placeholder(const std::vector<Segment>& segs, Segment::Kind k) {
  return std::any_of(segs.begin(), segs.end(), [&](const Segment& s) { return s.kind == k; });
}

// A template parsed and checked.
struct CompiledTemplate {
  Template source;
  std::vector<Segment> prompt;
  std::vector<Segment> target;
};

inline CompiledTemplate compile_template(const Template& t, const std::string& task, std::size_t index) {
  const std::string where = "task '" + task + "', template " + std::to_string(index);
  CompiledTemplate c{t, parse_pattern(t.prompt, where + ", prompt"), parse_pattern(t.target, where + ", target")};
  if (!has_placeholder(c.prompt, Segment::Kind::input))
    throw ValueError("[instruct::Template] " + where + ", prompt, column " + std::to_string(t.prompt.size()) +
                     ": the prompt has no {input} placeholder");
  if (has_placeholder(c.prompt, Segment::Kind::target)) {
    const std::size_t col = t.prompt.find("{target}");
    throw ValueError("[instruct::Template] " + where + ", prompt, column " + std::to_string(col) +
                     ": {target} may not appear in a prompt (it would show the answer)");
  }
  if (!has_placeholder(c.target, Segment::Kind::target))
    throw ValueError("[instruct::Template] " + where + ", target, column " + std::to_string(t.target.size()) +
                     ": the target has no {target} placeholder");
  return c;
}

// How answer options and few-shot exemplars are laid out.
struct RenderOptions {
  std::string options_header = "OPTIONS:";  // then "\n" + option_prefix + option for each option
  std::string option_prefix = "- ";
  std::string exemplar_separator = "\n\n";  // between few-shot exemplars and before the query
  std::string answer_separator = "\n";      // between an exemplar's prompt and its answer
};

struct TaskSpec {
  std::string name;
  TaskKind kind = TaskKind::generation;
  std::string instruction;                 // fills {instruction}
  std::vector<CompiledTemplate> templates;  // at least one
  std::vector<std::string> options;         // classification: the answer options (labels = their index)
  std::vector<std::string> metrics;         // e.g. {"accuracy", "macro_f1"} or {"bleu", "chrf"}

  // Builds and validates (every template parsed; classification needs >= 2 distinct options).
  static TaskSpec make(std::string name, TaskKind kind, std::string instruction, const std::vector<Template>& templates,
                       std::vector<std::string> options = {}, std::vector<std::string> metrics = {}) {
    if (name.empty()) throw ValueError("[instruct::TaskSpec] a task needs a name");
    if (templates.empty()) throw ValueError("[instruct::TaskSpec] task '" + name + "': no templates");
    TaskSpec s{std::move(name), kind, std::move(instruction), {}, std::move(options), std::move(metrics)};
    for (std::size_t i = 0; i < templates.size(); ++i) s.templates.push_back(compile_template(templates[i], s.name, i));
    if (kind == TaskKind::classification) {
      if (s.options.size() < 2)
        throw ValueError("[instruct::TaskSpec] task '" + s.name + "': a classification task needs at least 2 options, got " +
                         std::to_string(s.options.size()));
      for (std::size_t i = 0; i < s.options.size(); ++i)
        for (std::size_t j = 0; j < i; ++j)
          if (s.options[i] == s.options[j])
            throw ValueError("[instruct::TaskSpec] task '" + s.name + "': option " + std::to_string(i) + " \"" + s.options[i] +
                             "\" repeats option " + std::to_string(j));
    }
    return s;
  }

  // Index of `answer` among the options, or -1.
  std::int64_t option_index(std::string_view answer) const {
    for (std::size_t i = 0; i < options.size(); ++i)
      if (options[i] == answer) return static_cast<std::int64_t>(i);
    return -1;
  }
};

// One example of a task, before rendering.
struct Example {
  std::string input;
  std::string target;
};

// A rendered example: the text the model reads and the text it must produce.
struct Rendered {
  std::string prompt;
  std::string target;
  std::int64_t label = -1;  // classification: index of target among the options
};

namespace detail {

inline std::string options_text(const TaskSpec& spec, const RenderOptions& ro) {
  if (spec.options.empty()) return {};
  std::string s = ro.options_header;
  for (const auto& o : spec.options) s += "\n" + ro.option_prefix + o;
  return s;
}

inline std::string fill(const std::vector<Segment>& segs, const TaskSpec& spec, const Example& ex, const std::string& options) {
  std::string out;
  for (const Segment& s : segs) {
    switch (s.kind) {
      case Segment::Kind::text: out += s.text; break;
      case Segment::Kind::input: out += ex.input; break;
      case Segment::Kind::target: out += ex.target; break;
      case Segment::Kind::options: out += options; break;
      case Segment::Kind::instruction: out += spec.instruction; break;
    }
  }
  return out;
}

}  // namespace detail

// Renders `example` with template `template_index` of `spec`, after k = exemplars.size() solved
// exemplars (few-shot; zero-shot when empty). A classification target must be one of the options.
inline Rendered render(const TaskSpec& spec, std::size_t template_index, const Example& example,
                       std::span<const Example> exemplars = {}, const RenderOptions& ro = {}) {
  if (template_index >= spec.templates.size())
    throw IndexError("[instruct::render] task '" + spec.name + "': template " + std::to_string(template_index) + " of " +
                     std::to_string(spec.templates.size()));
  const CompiledTemplate& t = spec.templates[template_index];
  const std::string opts = detail::options_text(spec, ro);
  auto label_of = [&](const Example& ex, const char* what) -> std::int64_t {
    if (spec.kind != TaskKind::classification) return -1;
    const std::int64_t l = spec.option_index(ex.target);
    if (l < 0) throw ValueError("[instruct::render] task '" + spec.name + "': " + what + " target \"" + ex.target + "\" is not one of its options");
    return l;
  };
  Rendered r;
  for (std::size_t i = 0; i < exemplars.size(); ++i) {
    label_of(exemplars[i], "exemplar");
    r.prompt += detail::fill(t.prompt, spec, exemplars[i], opts) + ro.answer_separator + detail::fill(t.target, spec, exemplars[i], opts) +
                ro.exemplar_separator;
  }
  r.prompt += detail::fill(t.prompt, spec, example, opts);
  r.target = detail::fill(t.target, spec, example, opts);
  r.label = label_of(example, "the example's");
  return r;
}

// The tasks of a run, in task-id order (task id = index).
class TaskRegistry {
 public:
  std::int64_t add(TaskSpec spec) {
    for (const auto& t : tasks_)
      if (t.name == spec.name) throw ValueError("[instruct::TaskRegistry] task '" + spec.name + "' is registered twice");
    tasks_.push_back(std::move(spec));
    return static_cast<std::int64_t>(tasks_.size() - 1);
  }
  std::size_t size() const { return tasks_.size(); }
  const TaskSpec& operator[](std::size_t i) const { return tasks_.at(i); }
  std::int64_t index_of(std::string_view name) const {
    for (std::size_t i = 0; i < tasks_.size(); ++i)
      if (tasks_[i].name == name) return static_cast<std::int64_t>(i);
    std::string known;
    for (const auto& t : tasks_) known += (known.empty() ? "" : ", ") + t.name;
    throw ValueError("[instruct::TaskRegistry] no task '" + std::string(name) + "' (known: " + known + ")");
  }
  const TaskSpec& at(std::string_view name) const { return tasks_[static_cast<std::size_t>(index_of(name))]; }
  auto begin() const { return tasks_.begin(); }
  auto end() const { return tasks_.end(); }

 private:
  std::vector<TaskSpec> tasks_;
};

// The seed's three tasks with their instructions as defaults, several templates each.
inline TaskRegistry default_tasks() {
  TaskRegistry r;
  r.add(TaskSpec::make("translate", TaskKind::generation, "Translate this sentence into French.",
                       {{"{instruction}\n\n{input}"},
                        {"{input}\n\n{instruction}"},
                        {"English: {input}\nFrench:"},
                        {"How do you say \"{input}\" in French?"}},
                       {}, {"bleu", "chrf"}));
  r.add(TaskSpec::make("summarize", TaskKind::generation, "Summarize this article.",
                       {{"{instruction}\n\n{input}"},
                        {"{input}\n\n{instruction}"},
                        {"Article: {input}\n\nSummary:"},
                        {"{input}\n\nTL;DR:"}},
                       {}, {"rouge1", "rouge2", "rougeL"}));
  r.add(TaskSpec::make("sentiment", TaskKind::classification, "Is this sentence positive or negative?",
                       {{"{instruction}\n\n{input}\n{options}"},
                        {"{input}\n\n{instruction}\n{options}"},
                        {"Review: {input}\nDid the reviewer like it?\n{options}"}},
                       {"negative", "positive"}, {"accuracy", "macro_f1"}));
  return r;
}

// Reads tasks from JSON:
//   {"tasks": [{"name": "sentiment", "kind": "classification", "instruction": "...",
//               "options": ["negative", "positive"], "metrics": ["accuracy"],
//               "templates": ["{input}\n{options}", {"prompt": "...", "target": "{target}"}]}]}
// A template is a string (the prompt, target "{target}") or an object. Errors name `source` and
// the JSON path of the task (file.tasks[1]) followed by the task, template index, field and column.
inline TaskRegistry load_tasks(const io::Json& root, const std::string& source = "<json>") {
  TaskRegistry reg;
  const io::JsonRef tasks = io::JsonRef(root, source).at("tasks");
  for (std::size_t i = 0; i < tasks.size(); ++i) {
    const io::JsonRef t = tasks.at(i);
    const std::string name = t.at("name").as_string();
    TaskKind kind = TaskKind::generation;
    if (auto k = t.find("kind")) {
      const std::string& ks = k->as_string();
      if (ks == "classification") kind = TaskKind::classification;
      else if (ks != "generation")
        throw ValueError("[instruct::load_tasks] " + k->path() + ": expected \"generation\" or \"classification\", found \"" + ks + "\"");
    }
    std::string instruction;
    if (auto v = t.find("instruction")) instruction = v->as_string();
    auto strings = [&](const char* key) {
      std::vector<std::string> out;
      if (auto v = t.find(key))
        for (std::size_t j = 0; j < v->size(); ++j) out.push_back(v->at(j).as_string());
      return out;
    };
    const io::JsonRef tl = t.at("templates");
    std::vector<Template> templates;
    for (std::size_t j = 0; j < tl.size(); ++j) {
      const io::JsonRef e = tl.at(j);
      if (e.kind() == io::Json::Kind::string) templates.push_back({e.as_string()});
      else {
        Template tp{e.at("prompt").as_string()};
        if (auto tg = e.find("target")) tp.target = tg->as_string();
        templates.push_back(std::move(tp));
      }
    }
    try {
      reg.add(TaskSpec::make(name, kind, std::move(instruction), templates, strings("options"), strings("metrics")));
    } catch (const ValueError& e) {
      throw ValueError("[instruct::load_tasks] " + t.path() + ": " + e.what());
    }
  }
  return reg;
}

inline TaskRegistry load_tasks_file(const std::string& path) { return load_tasks(io::read_json_file(path), path); }

}  // namespace cerberus::instruct
