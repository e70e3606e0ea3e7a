// instruct/predict.hpp on a 3-task decoder model (two tied LM heads, one sequence classifier) with
// a character tokenizer: routing (exact, paraphrase, unknown), construction errors, prompts equal
// to what collation feeds in training, KV-cache generation = the recompute path (greedy, sampling,
// beam search; Hard and Soft), greedy = the argmax chain through model.forward, rank
// classification = softmax of hand-computed log-probability sums, head classification = softmax of
// the head's logits, batched = one at a time, seeded sampling repeats, repetition_penalty and
// no_repeat_ngram_size pass through to every decoding, and a model trained for a few dozen steps
// predicts its toy tasks.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "cerberus/cerberus.hpp"
#include "cerberus/instruct.hpp"
#include "cerberus/mtl.hpp"
#include "cerberus/mtl/weighting/static.hpp"
#include "support/catch.hpp"
#include "support/message.hpp"

using namespace cerberus;
using namespace cerberus::instruct;
using cerberus::testing_support::message_of;
using Ids = std::vector<std::int64_t>;

namespace {

// One id per character: 0 pad, 1 bos, 2 eos, 3 sep, 4 + (c - 32) for printable ASCII, 99 newline.
struct CharTokenizer {
  static constexpr Index vocab = 100;
  Ids encode(std::string_view s) const {
    Ids out;
    for (const char c : s) out.push_back(c == '\n' ? 99 : (c >= 32 && c < 127 ? 4 + (c - 32) : 4 + ('?' - 32)));
    return out;
  }
  std::string decode(std::span<const std::int64_t> ids) const {
    std::string out;
    for (const std::int64_t id : ids) {
      if (id == 99) out += '\n';
      else if (id >= 4) out += static_cast<char>(id - 4 + 32);
    }
    return out;
  }
  std::int64_t pad_id() const { return 0; }
  std::int64_t bos_id() const { return 1; }
  std::int64_t eos_id() const { return 2; }
};
constexpr std::int64_t sep = 3;

using Lm = mtl::LMHead<mtl::Tying::tied>;
using Cls = mtl::SequenceClassifier<2, mtl::Pooling::last>;
using M = mtl::Model<nn::Decoder<float>, mtl::Hard, mtl::Equal, mtl::Task<"translate", Lm>, mtl::Task<"summarize", Lm>,
                     mtl::Task<"sentiment", Cls>>;

nn::TransformerConfig tiny() {
  nn::TransformerConfig c;
  c.vocab_size = CharTokenizer::vocab;
  c.d_model = 32;
  c.n_layers = 2;
  c.n_heads = 4;
  c.d_ff = 64;
  c.max_seq_len = 96;
  c.dropout = 0.1;  // predictions must switch it off
  return c;
}

M make_model(std::uint64_t seed = 7, double dropout = 0.1) {
  Generator gen(seed);
  nn::TransformerConfig c = tiny();
  c.dropout = dropout;
  return M(nn::Decoder<float>(c, gen), gen);
}

const CharTokenizer tok;

PredictOptions predict_options() {
  PredictOptions o;
  o.collate = {.max_length = 96, .add_bos = true, .sep_id = sep};
  o.generation.max_new_tokens = 8;
  return o;
}

// Short templates: "summarize" as a one-word summary (a classification task through an LM head).
TaskRegistry toy_tasks() {
  TaskRegistry r;
  r.add(TaskSpec::make("translate", TaskKind::generation, "Translate to French.", {{"{instruction} {input}"}}));
  r.add(TaskSpec::make("summarize", TaskKind::classification, "Summarize in one word.", {{"{instruction} {input}"}}, {"sports", "politics"}));
  r.add(TaskSpec::make("sentiment", TaskKind::classification, "Positive or negative?", {{"{input} {instruction}"}}, {"negative", "positive"}));
  return r;
}

// Logits [1, T, V] of task k on one unpadded row, in eval mode.
Tensor<float> task_logits(M& model, std::size_t k, const Ids& ids) {
  mtl::Batch<float> b;
  b.ids = from_vector<std::int64_t>(ids, Shape{1, static_cast<Index>(ids.size())});
  b.task_id = full<std::int64_t>(Shape{1}, static_cast<std::int64_t>(k));
  return *model.forward(b).outputs[k];
}

std::vector<double> last_row(const Tensor<float>& logits) {
  const Tensor<float> c = logits.contiguous();
  const Index t = c.size(1), v = c.size(2);
  std::vector<double> out(static_cast<std::size_t>(v));
  for (Index j = 0; j < v; ++j) out[static_cast<std::size_t>(j)] = c.data()[(t - 1) * v + j];
  return out;
}

std::vector<double> softmax(std::vector<double> x) {
  double mx = x[0], total = 0;
  for (double v : x) mx = std::max(mx, v);
  for (double& v : x) total += v = std::exp(v - mx);
  for (double& v : x) v /= total;
  return x;
}

// Whether a token at or after position `first_new` completes a bigram seen earlier in `seq`. The
// prompt may repeat bigrams itself: no_repeat_ngram_size only constrains the tokens it chooses.
bool new_token_repeats_a_bigram(const Ids& seq, std::size_t first_new) {
  for (std::size_t j = std::max<std::size_t>(first_new, 1); j < seq.size(); ++j)
    for (std::size_t i = 0; i + 1 < j; ++i)
      if (seq[i] == seq[j - 1] && seq[i + 1] == seq[j]) return true;
  return false;
}

}  // namespace

TEST_CASE("instructions are normalised for an exact match and compared by word overlap otherwise") {
  CHECK(normalize_instruction("  Translate   this sentence\ninto FRENCH ?! ") == "translate this sentence into french");
  CHECK(instruction_similarity("Translate this sentence into French.", "please translate this sentence to french") == Approx(4.0 / 7.0));
  CHECK(instruction_similarity("", "") == 0.0);

  M model = make_model();
  Predictor predictor(model, tok, default_tasks(), predict_options());

  const TaskRoute exact = predictor.route("translate this  sentence into french");
  CHECK(exact.exact);
  CHECK(predictor.tasks()[exact.task].name == "translate");

  const TaskRoute paraphrase = predictor.route("Please translate this sentence to French!");
  CHECK_FALSE(paraphrase.exact);
  CHECK(predictor.tasks()[paraphrase.task].name == "translate");
  CHECK(paraphrase.similarity == Approx(4.0 / 7.0));
  CHECK(predictor.tasks()[predictor.route("Summarize the following article").task].name == "summarize");
  CHECK(predictor.tasks()[predictor.route("Is the review positive or negative?").task].name == "sentiment");

  const std::string unknown = message_of([&] { predictor.predict("Lima", "What is the capital of Peru?"); });
  CHECK(unknown.find("no task matches the instruction \"What is the capital of Peru?\"") != std::string::npos);
  for (const auto& t : default_tasks()) CHECK(unknown.find(t.instruction) != std::string::npos);

  // predict() puts the user's words into {instruction}; predict_task the task's own.
  const Prediction p = predictor.predict("The cat sleeps.", "please translate this sentence to french");
  CHECK(p.task == "translate");
  CHECK(p.kind == TaskKind::generation);
  CHECK(p.prompt == "please translate this sentence to french\n\nThe cat sleeps.");
  CHECK(predictor.predict_task("translate", "The cat sleeps.").prompt == "Translate this sentence into French.\n\nThe cat sleeps.");
}

TEST_CASE("a registry that does not fit the model is an error when the Predictor is built") {
  M model = make_model();
  TaskRegistry swapped;
  swapped.add(default_tasks()[1]);
  swapped.add(default_tasks()[0]);
  swapped.add(default_tasks()[2]);
  CHECK(message_of([&] { (void)Predictor(model, tok, swapped); }) ==
        "[instruct::Predictor] the task registry must list the model's tasks in the model's order: model (translate, summarize, sentiment), "
        "registry (summarize, translate, sentiment)");

  TaskRegistry generating_classifier;
  generating_classifier.add(default_tasks()[0]);
  generating_classifier.add(default_tasks()[1]);
  generating_classifier.add(TaskSpec::make("sentiment", TaskKind::generation, "Describe the mood.", {{"{input}"}}));
  CHECK(message_of([&] { (void)Predictor(model, tok, generating_classifier); }) ==
        "[instruct::Predictor] task 'sentiment' (generation): only an mtl::LMHead can generate text; this task's head is not one");

  TaskRegistry three_options;
  three_options.add(default_tasks()[0]);
  three_options.add(default_tasks()[1]);
  three_options.add(TaskSpec::make("sentiment", TaskKind::classification, "Mood?", {{"{input}"}}, {"negative", "neutral", "positive"}));
  CHECK(message_of([&] { (void)Predictor(model, tok, three_options); }) ==
        "[instruct::Predictor] task 'sentiment' (classification): its SequenceClassifier has 2 classes but the task has 3 options");

  PredictOptions bad_template = predict_options();
  bad_template.template_index = 3;
  CHECK(message_of([&] { (void)Predictor(model, tok, default_tasks(), bad_template); }) ==
        "[instruct::Predictor] template_index 3, but task 'sentiment' has 3 templates");

  Predictor predictor(model, tok, default_tasks(), predict_options());
  CHECK(predictor.method("translate") == PredictionMethod::generate);
  CHECK(predictor.method("sentiment") == PredictionMethod::classifier_head);
  CHECK(Predictor(model, tok, toy_tasks(), predict_options()).method("summarize") == PredictionMethod::rank_classification);
}

TEST_CASE("prompts are the ids collation feeds in training, cut from the left to leave room for the answer") {
  M model = make_model();
  const PredictOptions o = predict_options();
  Predictor predictor(model, tok, default_tasks(), o);

  const Prediction g = predictor.predict_task("translate", "The cat sleeps.");
  const std::vector<TextPair> pair{{g.prompt, "Le chat dort.", 0}};
  const Ids row = collate_lm(std::span<const TextPair>(pair), tok, o.collate).input_ids.to_vector();
  REQUIRE(row.size() > g.prompt_ids.size());
  CHECK(Ids(row.begin(), row.begin() + static_cast<std::ptrdiff_t>(g.prompt_ids.size())) == g.prompt_ids);
  CHECK(g.prompt_ids.front() == tok.bos_id());
  CHECK(g.prompt_ids.back() == sep);

  // A classifier head reads what InstructionBatches feeds it (collate_lm, prompt only), or
  // collate_classify's row.
  const Prediction c = predictor.predict_task("sentiment", "What a film!");
  const std::vector<TextPair> prompt_only{{c.prompt, "", 2, 1}};
  CHECK(collate_lm(std::span<const TextPair>(prompt_only), tok, o.collate).input_ids.to_vector() == c.prompt_ids);
  CHECK(c.prompt_ids.back() == sep);
  PredictOptions classify = o;
  classify.head_prompt = HeadPrompt::as_collate_classify;
  const Prediction d = Predictor(model, tok, default_tasks(), classify).predict_task("sentiment", "What a film!");
  const std::vector<TextPair> labelled{{d.prompt, "positive", 2, 1}};
  CHECK(collate_classify(std::span<const TextPair>(labelled), tok, o.collate).batch.ids.to_vector() == d.prompt_ids);
  CHECK(d.prompt_ids.back() == tok.eos_id());

  // A long input: bos + prompt + sep + max_new_tokens fill max_length; the prompt's end survives.
  const std::string long_text(200, 'x');
  const Prediction cut = predictor.predict_task("summarize", long_text + " END");
  CHECK(static_cast<Index>(cut.prompt_ids.size()) == o.collate.max_length - o.generation.max_new_tokens);
  const Ids end = tok.encode(" END");
  CHECK(Ids(cut.prompt_ids.end() - 5, cut.prompt_ids.end() - 1) == end);

  PredictOptions strict = o;
  strict.collate.truncation = Truncation::error;
  Predictor refusing(model, tok, default_tasks(), strict);
  CHECK(message_of([&] { refusing.predict_task("summarize", long_text); }).find("(Truncation::error)") != std::string::npos);
}

TEST_CASE("greedy generation is the argmax chain through model.forward, with or without the KV cache") {
  M model = make_model();
  PredictOptions o = predict_options();
  Predictor cached(model, tok, default_tasks(), o);
  o.use_kv_cache = false;
  Predictor recomputing(model, tok, default_tasks(), o);
  CHECK(cached.uses_kv_cache("translate"));
  CHECK_FALSE(recomputing.uses_kv_cache("translate"));

  for (const char* text : {"The cat sleeps.", "A dog barks at night."}) {
    const Prediction a = cached.predict_task("translate", text);
    const Prediction b = recomputing.predict_task("translate", text);
    CHECK(a.output_ids == b.output_ids);
    CHECK(a.text == b.text);
    CHECK(a.label == -1);
    CHECK(a.probabilities.empty());

    // By hand: append the argmax of the last position until eos or max_new_tokens.
    model.eval();
    NoGradGuard no_grad;
    Ids seq = a.prompt_ids, expected;
    for (Index n = 0; n < o.generation.max_new_tokens; ++n) {
      const std::vector<double> z = last_row(task_logits(model, 0, seq));
      const auto next = static_cast<std::int64_t>(std::max_element(z.begin(), z.end()) - z.begin());
      if (next == tok.eos_id()) break;
      expected.push_back(next);
      seq.push_back(next);
    }
    model.train();
    CHECK(a.output_ids == expected);
    CHECK(a.text == tok.decode(expected));
  }
  CHECK(model.is_training());  // the Predictor restores the mode it found
}

TEST_CASE("sampling and beam search give the same tokens with the KV cache as by recomputing; a seed repeats") {
  M model = make_model();
  for (const Decoding d : {Decoding::sampling, Decoding::beam_search}) {
    PredictOptions o = predict_options();
    o.generation.decoding = d;
    o.generation.temperature = 1.5;
    o.generation.top_k = 20;
    o.generation.top_p = 0.9;
    o.generation.seed = 11;
    o.generation.num_beams = 3;
    o.generation.min_new_tokens = 2;
    Predictor cached(model, tok, default_tasks(), o);
    o.use_kv_cache = false;
    Predictor recomputing(model, tok, default_tasks(), o);
    const Prediction a = cached.predict("A dog barks.", "Summarize this article.");
    CHECK(a.task == "summarize");
    CHECK(a.output_ids.size() >= 2);
    CHECK(a.output_ids == recomputing.predict("A dog barks.", "Summarize this article.").output_ids);
    CHECK(a.output_ids == cached.predict("A dog barks.", "Summarize this article.").output_ids);
  }
}

TEST_CASE("repetition_penalty and no_repeat_ngram_size reach every decoding, with or without the KV cache") {
  M model = make_model();
  PredictOptions o = predict_options();
  o.generation.max_new_tokens = 16;
  o.generation.stop_at_eos = false;  // long outputs, where an untrained model repeats itself
  const char* text = "The cat sleeps.";
  const Ids plain = Predictor(model, tok, default_tasks(), o).predict_task("translate", text).output_ids;
  o.generation.repetition_penalty = 1.3;
  o.generation.no_repeat_ngram_size = 2;
  Predictor cached(model, tok, default_tasks(), o);
  o.use_kv_cache = false;
  Predictor recomputing(model, tok, default_tasks(), o);
  const Prediction a = cached.predict_task("translate", text);
  CHECK(a.output_ids == recomputing.predict_task("translate", text).output_ids);
  CHECK(a.output_ids != plain);

  // By hand: the argmax chain through model.forward, after penalising the ids read so far
  // (prompt included) and banning the tokens that would repeat a bigram.
  model.eval();
  NoGradGuard no_grad;
  Ids seq = a.prompt_ids, expected;
  for (Index n = 0; n < o.generation.max_new_tokens; ++n) {
    std::vector<double> z = last_row(task_logits(model, 0, seq));
    for (std::size_t id = 0; id < z.size(); ++id)
      if (std::find(seq.begin(), seq.end(), static_cast<std::int64_t>(id)) != seq.end()) z[id] = z[id] < 0 ? z[id] * 1.3 : z[id] / 1.3;
    for (std::size_t i = 0; i + 1 < seq.size(); ++i)
      if (seq[i] == seq.back()) z[static_cast<std::size_t>(seq[i + 1])] = -std::numeric_limits<double>::infinity();
    const auto next = static_cast<std::int64_t>(std::max_element(z.begin(), z.end()) - z.begin());
    expected.push_back(next);
    seq.push_back(next);
  }
  model.train();
  CHECK(a.output_ids == expected);
  CHECK_FALSE(new_token_repeats_a_bigram(seq, a.prompt_ids.size()));

  // Sampling and beam search: the same tokens both ways, and no new token repeats a bigram.
  for (const Decoding d : {Decoding::sampling, Decoding::beam_search}) {
    o.generation.decoding = d;
    o.generation.seed = 5;
    o.generation.num_beams = 3;
    o.use_kv_cache = true;
    const Ids with_cache = Predictor(model, tok, default_tasks(), o).predict_task("translate", text).output_ids;
    o.use_kv_cache = false;
    const Prediction b = Predictor(model, tok, default_tasks(), o).predict_task("translate", text);
    CHECK(b.output_ids == with_cache);
    Ids all = b.prompt_ids;
    all.insert(all.end(), b.output_ids.begin(), b.output_ids.end());
    CHECK_FALSE(new_token_repeats_a_bigram(all, b.prompt_ids.size()));
  }
}

TEST_CASE("a Soft model generates from its task's own trunk with the KV cache") {
  using S = mtl::Model<nn::Decoder<float>, mtl::Soft<0.01>, mtl::Equal, mtl::Task<"translate", Lm>, mtl::Task<"summarize", Lm>,
                       mtl::Task<"sentiment", Cls>>;
  Generator gen(3);
  S model(nn::Decoder<float>(tiny(), gen), gen);
  // Make the trunks differ, so that using the wrong one would show.
  {
    NoGradGuard no_grad;
    for (auto& p : model.sharing().trunks[1].named_parameters()) p.tensor.assign(p.tensor * 1.5f);
  }
  PredictOptions o = predict_options();
  Predictor cached(model, tok, default_tasks(), o);
  o.use_kv_cache = false;
  Predictor recomputing(model, tok, default_tasks(), o);
  CHECK(cached.uses_kv_cache("summarize"));
  for (const char* task : {"translate", "summarize"})
    CHECK(cached.predict_task(task, "The cat sleeps.").output_ids == recomputing.predict_task(task, "The cat sleeps.").output_ids);
}

TEST_CASE("rank classification: softmax over the options' summed log-probabilities of answer + eos") {
  M model = make_model();
  const PredictOptions o = predict_options();
  Predictor predictor(model, tok, toy_tasks(), o);
  const Prediction p = predictor.predict("team wins the cup", "Summarize in one word");
  CHECK(p.task == "summarize");
  CHECK(p.kind == TaskKind::classification);
  REQUIRE(p.probabilities.size() == 2);

  model.eval();
  NoGradGuard no_grad;
  std::vector<double> scores;
  for (const std::string option : {"sports", "politics"}) {
    Ids answer = tok.encode(option);
    answer.push_back(tok.eos_id());
    Ids seq = p.prompt_ids;
    seq.insert(seq.end(), answer.begin(), answer.end() - 1);
    const Tensor<float> logits = task_logits(model, 1, seq).contiguous();
    const Index v = logits.size(2);
    double score = 0;
    for (std::size_t j = 0; j < answer.size(); ++j) {
      const float* row = logits.data() + (static_cast<Index>(p.prompt_ids.size() + j) - 1) * v;
      double total = 0;
      for (Index c = 0; c < v; ++c) total += std::exp(static_cast<double>(row[c]));
      score += static_cast<double>(row[answer[j]]) - std::log(total);
    }
    scores.push_back(score);
  }
  model.train();
  const std::vector<double> expected = softmax(scores);
  CHECK(p.probabilities[0] == Approx(expected[0]).margin(1e-6));
  CHECK(p.probabilities[1] == Approx(expected[1]).margin(1e-6));
  CHECK(p.label == (scores[0] >= scores[1] ? 0 : 1));
  CHECK(p.text == (p.label == 0 ? "sports" : "politics"));
}

TEST_CASE("head classification: softmax of the classifier's logits; predict_many = one text at a time") {
  M model = make_model();
  PredictOptions o = predict_options();
  o.batch_rows = 2;  // several passes, padded rows
  Predictor predictor(model, tok, toy_tasks(), o);
  const std::vector<std::string> texts{"good film", "an awful, boring day", "great", "bad"};
  const std::vector<Prediction> many = predictor.predict_many("sentiment", texts);
  REQUIRE(many.size() == texts.size());
  for (std::size_t i = 0; i < texts.size(); ++i) {
    const Prediction one = predictor.predict_task("sentiment", texts[i]);
    CHECK(many[i].label == one.label);
    CHECK(many[i].text == one.text);
    CHECK(many[i].probabilities[0] == Approx(one.probabilities[0]).margin(1e-6));

    model.eval();
    NoGradGuard no_grad;
    mtl::Batch<float> b;
    b.ids = from_vector<std::int64_t>(one.prompt_ids, Shape{1, static_cast<Index>(one.prompt_ids.size())});
    b.task_id = full<std::int64_t>(Shape{1}, 2);
    const std::vector<float> z = model.forward(b).outputs[2]->to_vector();
    model.train();
    const std::vector<double> expected = softmax({z[0], z[1]});
    CHECK(one.probabilities[0] == Approx(expected[0]).margin(1e-6));
    CHECK(one.probabilities[1] == Approx(expected[1]).margin(1e-6));
    CHECK(one.label == (z[1] > z[0] ? 1 : 0));
  }

  const std::vector<std::string> topics{"vote on the new law", "goal"};
  const std::vector<Prediction> ranked = predictor.predict_many("summarize", topics);
  for (std::size_t i = 0; i < topics.size(); ++i)
    CHECK(ranked[i].probabilities[1] == Approx(predictor.predict_task("summarize", topics[i]).probabilities[1]).margin(1e-6));
  const std::vector<std::string> sources{"cat", "the dog"};
  const std::vector<Prediction> generated = predictor.predict_many("translate", sources);
  for (std::size_t i = 0; i < sources.size(); ++i) CHECK(generated[i].output_ids == predictor.predict_task("translate", sources[i]).output_ids);
}

TEST_CASE("a model trained for a few dozen steps predicts its toy tasks") {
  M model = make_model(1, /*dropout=*/0.0);  // memorising 12 examples fast: no dropout
  const TaskRegistry tasks = toy_tasks();
  PredictOptions o = predict_options();
  const std::vector<std::pair<std::string, std::string>> french{{"cat", "chat"}, {"dog", "chien"}, {"sun", "soleil"}, {"red", "rouge"}};
  const std::vector<std::pair<std::string, std::string>> topics{{"goal in the last minute", "sports"},
                                                                {"team wins the cup", "sports"},
                                                                {"vote on the new law", "politics"},
                                                                {"senate passes the bill", "politics"}};
  const std::vector<std::pair<std::string, std::string>> moods{
      {"good film", "positive"}, {"great day", "positive"}, {"bad film", "negative"}, {"awful day", "negative"}};

  // One mixed batch, as InstructionBatches builds it: the classifier task's rows hold the prompt
  // alone (Answer::label_only) and its label.
  std::vector<TextPair> pairs;
  for (const auto& [in, out] : french) {
    const Rendered r = render(tasks[0], 0, {in, out});
    pairs.push_back({r.prompt, r.target, 0});
  }
  for (const auto& [in, out] : topics) {
    const Rendered r = render(tasks[1], 0, {in, out});
    pairs.push_back({r.prompt, r.target, 1, r.label});
  }
  for (const auto& [in, out] : moods) {
    const Rendered r = render(tasks[2], 0, {in, out});
    pairs.push_back({r.prompt, "", 2, r.label});
  }
  const mtl::Batch<float> batch = collate_lm(std::span<const TextPair>(pairs), tok, o.collate).to_mtl();

  optim::AdamW optimizer(model.trainable_parameters(), {.lr = 1e-2, .weight_decay = 0.0});
  for (int step = 0; step < 100; ++step) {
    model.step(batch, optimizer);
  }

  Predictor predictor(model, tok, tasks, o);
  for (const auto& [in, out] : french) CHECK(predictor.predict(in, "Translate to French.").text == out);
  for (const auto& [in, out] : topics) CHECK(predictor.predict(in, "Summarize in one word.").text == out);
  for (const auto& [in, out] : moods) {
    const Prediction p = predictor.predict(in, "Positive or negative?");
    CHECK(p.text == out);
    CHECK(p.probabilities[static_cast<std::size_t>(p.label)] > 0.5);
  }
  o.generation.decoding = Decoding::beam_search;
  o.generation.num_beams = 2;
  Predictor beams(model, tok, tasks, o);
  for (const auto& [in, out] : french) CHECK(beams.predict_task("translate", in).text == out);
}
