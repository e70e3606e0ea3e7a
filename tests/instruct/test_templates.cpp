// instruct/templates.hpp: rendering (placeholders, brace escapes, options, few-shot), every
// validation error with its task / template / field / column, the default tasks, and loading
// from JSON with errors that name the file and path.
#include <string>
#include <vector>

#include "cerberus/instruct/templates.hpp"
#include "support/catch.hpp"
#include "support/message.hpp"
#include "support/temp_dir.hpp"

using namespace cerberus;
using namespace cerberus::instruct;
using cerberus::testing_support::message_of;
using cerberus::testing_support::TempDir;

namespace {
TaskSpec sentiment() {
  return TaskSpec::make("sentiment", TaskKind::classification, "Is this sentence positive or negative?",
                        {{"{input}\n\n{instruction}\n{options}"}, {"Q: {{{input}}}", "A: {target}"}}, {"positive", "negative"},
                        {"accuracy"});
}
}  // namespace

TEST_CASE("render fills every placeholder; {{ and }} are literal braces; options are listed") {
  const TaskSpec s = sentiment();
  const Rendered r = render(s, 0, {"What a film!", "positive"});
  CHECK(r.prompt == "What a film!\n\nIs this sentence positive or negative?\nOPTIONS:\n- positive\n- negative");
  CHECK(r.target == "positive");
  CHECK(r.label == 0);
  const Rendered r2 = render(s, 1, {"Dull.", "negative"});
  CHECK(r2.prompt == "Q: {Dull.}");
  CHECK(r2.target == "A: negative");
  CHECK(r2.label == 1);
}

TEST_CASE("option layout is configurable") {
  RenderOptions ro;
  ro.options_header = "Choices:";
  ro.option_prefix = "* ";
  const Rendered r = render(sentiment(), 0, {"x", "negative"}, {}, ro);
  CHECK(r.prompt == "x\n\nIs this sentence positive or negative?\nChoices:\n* positive\n* negative");
}

TEST_CASE("few-shot: k exemplars rendered with the same template, then the query") {
  const TaskSpec s = TaskSpec::make("translate", TaskKind::generation, "Translate this sentence into French.",
                                    {{"{instruction} {input}", "{target}"}});
  const std::vector<Example> shots{{"cat", "chat"}, {"dog", "chien"}};
  const Rendered r = render(s, 0, {"bird", "oiseau"}, shots);
  CHECK(r.prompt ==
        "Translate this sentence into French. cat\nchat\n\n"
        "Translate this sentence into French. dog\nchien\n\n"
        "Translate this sentence into French. bird");
  CHECK(r.target == "oiseau");
  CHECK(r.label == -1);
  RenderOptions ro;
  ro.exemplar_separator = " ### ";
  ro.answer_separator = " => ";
  CHECK(render(s, 0, {"bird", "oiseau"}, std::span<const Example>(shots).first(1), ro).prompt ==
        "Translate this sentence into French. cat => chat ### Translate this sentence into French. bird");
  // Zero-shot is the query alone.
  CHECK(render(s, 0, {"bird", "oiseau"}).prompt == "Translate this sentence into French. bird");
}

TEST_CASE("validation errors name the task, template index, field and column") {
  auto make = [](Template t) {
    return message_of([&] { TaskSpec::make("t", TaskKind::generation, "", {{"{input}"}, t}); });
  };
  CHECK(make({"{input} {question}"}) ==
        "[instruct::Template] task 't', template 1, prompt, column 8: unknown placeholder {question} (known: {input}, {target}, "
        "{options}, {instruction})");
  CHECK(make({"{input} {instruction"}) ==
        "[instruct::Template] task 't', template 1, prompt, column 8: unclosed '{' (write '{{' for a literal brace)");
  CHECK(make({"{input} {in{put}"}) ==
        "[instruct::Template] task 't', template 1, prompt, column 8: unclosed '{' (write '{{' for a literal brace)");
  CHECK(make({"{input} }"}) ==
        "[instruct::Template] task 't', template 1, prompt, column 8: unmatched '}' (write '}}' for a literal brace)");
  CHECK(make({"Translate: {instruction}"}) ==
        "[instruct::Template] task 't', template 1, prompt, column 24: the prompt has no {input} placeholder");
  CHECK(make({"{input} {target}"}) ==
        "[instruct::Template] task 't', template 1, prompt, column 8: {target} may not appear in a prompt (it would show the answer)");
  CHECK(make({"{input}", "answer"}) ==
        "[instruct::Template] task 't', template 1, target, column 6: the target has no {target} placeholder");
  CHECK(make({"{input}", "{target} {x}"}) ==
        "[instruct::Template] task 't', template 1, target, column 9: unknown placeholder {x} (known: {input}, {target}, {options}, "
        "{instruction})");
  // Every error is a ValueError.
  CHECK_THROWS_AS(TaskSpec::make("t", TaskKind::generation, "", {{"{nope}"}}), ValueError);
}

TEST_CASE("task-level errors: no templates, too few or repeated options, a target that is not an option") {
  CHECK(message_of([] { TaskSpec::make("t", TaskKind::generation, "", {}); }) == "[instruct::TaskSpec] task 't': no templates");
  CHECK(message_of([] { TaskSpec::make("c", TaskKind::classification, "", {{"{input}"}}, {"yes"}); }) ==
        "[instruct::TaskSpec] task 'c': a classification task needs at least 2 options, got 1");
  CHECK(message_of([] { TaskSpec::make("c", TaskKind::classification, "", {{"{input}"}}, {"yes", "no", "yes"}); }) ==
        "[instruct::TaskSpec] task 'c': option 2 \"yes\" repeats option 0");
  CHECK(message_of([] { render(sentiment(), 0, {"x", "neutral"}); }) ==
        "[instruct::render] task 'sentiment': the example's target \"neutral\" is not one of its options");
  CHECK(message_of([] { render(sentiment(), 0, {"x", "positive"}, std::vector<Example>{{"y", "meh"}}); }) ==
        "[instruct::render] task 'sentiment': exemplar target \"meh\" is not one of its options");
  CHECK(message_of([] { render(sentiment(), 2, {"x", "positive"}); }) == "[instruct::render] task 'sentiment': template 2 of 2");
}

TEST_CASE("default tasks: the seed's instructions, several templates each, every template renders") {
  const TaskRegistry reg = default_tasks();
  REQUIRE(reg.size() == 3);
  CHECK(reg.at("translate").instruction == "Translate this sentence into French.");
  CHECK(reg.at("summarize").instruction == "Summarize this article.");
  CHECK(reg.at("sentiment").instruction == "Is this sentence positive or negative?");
  CHECK(reg.at("sentiment").kind == TaskKind::classification);
  CHECK(reg.index_of("sentiment") == 2);
  for (const TaskSpec& t : reg) {
    CHECK(t.templates.size() >= 3);
    const std::string target = t.kind == TaskKind::classification ? t.options[1] : std::string("out");
    for (std::size_t i = 0; i < t.templates.size(); ++i) {
      const Rendered r = render(t, i, {"INPUT", target});
      CHECK(r.prompt.find("INPUT") != std::string::npos);
      CHECK(r.target == target);
      if (t.kind == TaskKind::classification) CHECK(r.prompt.find("- positive") != std::string::npos);
    }
  }
  CHECK(message_of([&] { reg.index_of("qa"); }) == "[instruct::TaskRegistry] no task 'qa' (known: translate, summarize, sentiment)");
  TaskRegistry r2 = default_tasks();
  CHECK(message_of([&] { r2.add(TaskSpec::make("translate", TaskKind::generation, "", {{"{input}"}})); }) ==
        "[instruct::TaskRegistry] task 'translate' is registered twice");
}

TEST_CASE("load_tasks from a JSON file; errors name the file, the JSON path and the template") {
  TempDir dir;
  const auto good = dir.write("tasks.json", R"({"tasks": [
    {"name": "sentiment", "kind": "classification", "instruction": "Is this sentence positive or negative?",
     "options": ["negative", "positive"], "metrics": ["accuracy", "macro_f1"],
     "templates": ["{input}\n{options}", {"prompt": "{instruction} {input}", "target": "Answer: {target}"}]},
    {"name": "summarize", "instruction": "Summarize this article.", "templates": ["{input}\n\n{instruction}"]}]})");
  const TaskRegistry reg = load_tasks_file(good.string());
  REQUIRE(reg.size() == 2);
  const TaskSpec& s = reg[0];
  CHECK(s.kind == TaskKind::classification);
  CHECK(s.options == std::vector<std::string>{"negative", "positive"});
  CHECK(s.metrics == std::vector<std::string>{"accuracy", "macro_f1"});
  CHECK(render(s, 1, {"Great.", "positive"}).target == "Answer: positive");
  CHECK(render(s, 1, {"Great.", "positive"}).prompt == "Is this sentence positive or negative? Great.");
  CHECK(reg[1].kind == TaskKind::generation);
  CHECK(render(reg[1], 0, {"Long text.", "Short."}).prompt == "Long text.\n\nSummarize this article.");

  const auto bad = dir.write("bad.json", R"({"tasks": [{"name": "a", "templates": ["{input}"]},
    {"name": "b", "templates": ["{input}", {"prompt": "{inptu}"}]}]})");
  CHECK(message_of([&] { load_tasks_file(bad.string()); }) ==
        "[instruct::load_tasks] " + bad.string() + ".tasks[1]: [instruct::Template] task 'b', template 1, prompt, column 0: " +
            "unknown placeholder {inptu} (known: {input}, {target}, {options}, {instruction})");
  const auto kind = dir.write("kind.json", R"({"tasks": [{"name": "a", "kind": "regression", "templates": ["{input}"]}]})");
  CHECK(message_of([&] { load_tasks_file(kind.string()); }) ==
        "[instruct::load_tasks] " + kind.string() + ".tasks[0].kind: expected \"generation\" or \"classification\", found \"regression\"");
  const auto missing = dir.write("missing.json", R"({"tasks": [{"name": "a"}]})");
  CHECK(message_of([&] { load_tasks_file(missing.string()); }) ==
        "[json] " + missing.string() + ".tasks[0]: expected a member \"templates\", found none");
}
