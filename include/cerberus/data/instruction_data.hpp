// The seed's three instruction tasks built from the real data that scripts/fetch-data.sh puts in
// data/, split deterministically, and cached as JSON Lines:
//
//   translate  English -> French: DDTP Translation-en joined with Translation-fr (ddtp.hpp)
//   summarize  long -> short: a DDTP English long description's first sentences -> its short one
//   sentiment  sentence -> "positive" / "negative": the amazon, yelp and imdb sets (sentiment.hpp)
//
// (The names are those of instruct::default_tasks(), whose templates render these examples.)
//
//   auto report = cerberus::data::prepare_instruction_data("data", "data/instruct");  // ~2 s, once
//   auto task = cerberus::data::read_prepared_task("data/instruct", "translate");
//   for (const TextExample& e : task.splits.train) use(e.input, e.target);
//
// Splits (splits.hpp): by the hash of a key, so they do not depend on input order. The key is the
// Debian package's Description-md5 in both DDTP tasks, so a package is in the same split in
// translate and summarize and never in two; for sentiment it is the sentence. Pre-training text
// from DDTP (ddtp_pretraining_documents) takes train-split packages only, so no validation or test
// description is ever seen in pre-training either.
//
// Cache layout, one folder per task:
//   <cache>/<task>/{train,validation,test}.jsonl  {"input": ..., "target": ..., "key": ...} per line
//   <cache>/<task>/manifest.json                   written last: format version, options, the
//                                                  sources' sizes and times, counts, file sizes
// A task is rebuilt when its manifest is missing, of another format version, made with other
// options or from other source files (size or modification time), or when a split file is missing
// or has another size; otherwise it is left alone. Delete the folder to force a rebuild.
#pragma once

#include <algorithm>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <map>
#include <string>
#include <string_view>
#include <system_error>
#include <unordered_map>
#include <unordered_set>
#include <utility>
#include <vector>

#include "cerberus/core/error.hpp"
#include "cerberus/data/ddtp.hpp"
#include "cerberus/data/jsonl.hpp"
#include "cerberus/data/read_report.hpp"
#include "cerberus/data/sentences.hpp"
#include "cerberus/data/sentiment.hpp"
#include "cerberus/data/splits.hpp"
#include "cerberus/data/text_corpus.hpp"
#include "cerberus/io/file.hpp"
#include "cerberus/io/json.hpp"

namespace cerberus::data {

inline constexpr std::string_view translate_task = "translate";
inline constexpr std::string_view summarize_task = "summarize";
inline constexpr std::string_view sentiment_task = "sentiment";

// Bumped whenever the files' content or layout changes, so that old caches are rebuilt.
inline constexpr std::int64_t instruction_data_format_version = 1;

struct TextExample {
  std::string input;
  std::string target;
  std::string key;  // decides the split: a Description-md5, or the sentiment sentence
  friend bool operator==(const TextExample&, const TextExample&) = default;
};

struct TaskSplits {
  std::string name;
  std::vector<TextExample> train, validation, test;

  std::vector<TextExample>& split(Split s) { return s == Split::train ? train : s == Split::validation ? validation : test; }
  const std::vector<TextExample>& split(Split s) const {
    return s == Split::train ? train : s == Split::validation ? validation : test;
  }
};

struct TranslationOptions {
  std::size_t max_source_words = 20;  // English words (runs separated by ASCII whitespace); longer pairs are left out
  // Aligned paragraphs are split into sentences on both sides and paired sentence by sentence
  // when both have as many; otherwise (or when false) the paragraph pair stays whole.
  bool sentence_pairs = true;
};

struct SummarizationOptions {
  // The input is the long description's leading whole sentences within this many words; a first
  // sentence longer than that is cut after its first max_input_words words.
  std::size_t max_input_words = 48;
};

struct InstructionDataOptions {
  TranslationOptions translation;
  SummarizationOptions summarization;
  SplitOptions split;
};

// Why examples were left out, and how many: e.g. {"duplicate": 812, "source over 20 words": 40311}.
using FilterCounts = std::map<std::string, std::size_t>;

// Words = runs of non-whitespace, whitespace being ASCII (a no-break space joins two words).
inline std::size_t count_words(std::string_view text) {
  std::size_t n = 0;
  bool in_word = false;
  for (const char c : text) {
    const bool space = text_detail::is_space(c);
    if (!space && !in_word) ++n;
    in_word = !space;
  }
  return n;
}

// The first `max_words` whitespace-separated words of `text`, joined by single spaces.
inline std::string first_words(std::string_view text, std::size_t max_words) {
  std::string out;
  std::size_t n = 0;
  std::size_t i = 0;
  while (i < text.size() && n < max_words) {
    while (i < text.size() && text_detail::is_space(text[i])) ++i;
    const std::size_t start = i;
    while (i < text.size() && !text_detail::is_space(text[i])) ++i;
    if (i == start) break;
    if (!out.empty()) out += ' ';
    out.append(text.substr(start, i - start));
    ++n;
  }
  return out;
}

// The leading whole sentences of `paragraphs` (in order) that fit in `max_words` words, joined by
// one space; when even the first sentence is longer, its first max_words words.
inline std::string leading_sentences(const std::vector<std::string>& paragraphs, std::size_t max_words) {
  std::string out;
  std::size_t words = 0;
  for (const std::string& p : paragraphs)
    for (const std::string& s : split_sentences(p)) {
      const std::size_t n = count_words(s);
      if (words + n > max_words) return out.empty() ? first_words(s, max_words) : out;
      if (!out.empty()) out += ' ';
      out += s;
      words += n;
    }
  return out;
}

namespace instruction_detail {
inline void count(FilterCounts* filtered, const std::string& reason) {
  if (filtered) ++(*filtered)[reason];
}
}  // namespace instruction_detail

// English -> French examples (key: the Description-md5), in `english` order: align_translations'
// pairs, paragraphs split into sentence pairs (TranslationOptions), without pairs over the word
// limit, with an empty side, with no ASCII letter in the English (list numbers such as "3."), or
// left untranslated (French identical to the English), and without repeats of an identical
// (input, target) (the first, in file order, is kept). `filtered` (optional) counts what was left
// out and why.
inline std::vector<TextExample> translation_examples(const std::vector<PackageDescription>& english,
                                                     const std::vector<PackageDescription>& french,
                                                     const TranslationOptions& options = {},
                                                     FilterCounts* filtered = nullptr) {
  using instruction_detail::count;
  std::vector<TextExample> out;
  std::unordered_set<std::string> seen;  // input + '\0' + target
  auto add = [&](std::string_view source, std::string_view target, const std::string& md5) {
    source = text_detail::trim(source), target = text_detail::trim(target);
    if (source.empty() || target.empty()) return count(filtered, "empty side");
    if (std::none_of(source.begin(), source.end(), text_detail::is_alpha)) return count(filtered, "no letters");
    if (source == target) return count(filtered, "untranslated");
    if (count_words(source) > options.max_source_words)
      return count(filtered, "source over " + std::to_string(options.max_source_words) + " words");
    std::string pair_key = std::string(source) + '\0' + std::string(target);
    if (!seen.insert(std::move(pair_key)).second) return count(filtered, "duplicate");
    out.push_back({std::string(source), std::string(target), md5});
  };
  for (const TranslationPair& p : align_translations(english, french)) {
    if (options.sentence_pairs && p.kind == TranslationPair::Kind::paragraph) {
      const std::vector<std::string> s = split_sentences(p.source), t = split_sentences(p.target);
      if (s.size() == t.size() && s.size() > 1) {
        for (std::size_t i = 0; i < s.size(); ++i) add(s[i], t[i], p.md5);
        continue;
      }
    }
    add(p.source, p.target, p.md5);
  }
  return out;
}

// Long -> short examples from English descriptions (key: the Description-md5): input =
// leading_sentences(paragraphs, max_input_words), target = the short description. Descriptions
// without long text or with an empty short one are left out, as are repeats of a md5 (the same
// description shipped by several packages: the first is kept).
inline std::vector<TextExample> summarization_examples(const std::vector<PackageDescription>& english,
                                                       const SummarizationOptions& options = {},
                                                       FilterCounts* filtered = nullptr) {
  using instruction_detail::count;
  std::vector<TextExample> out;
  std::unordered_set<std::string_view> seen;
  for (const PackageDescription& d : english) {
    if (!seen.insert(d.md5).second) {
      count(filtered, "duplicate md5");
      continue;
    }
    const std::string_view target = text_detail::trim(d.short_text);
    std::string input = leading_sentences(d.paragraphs, options.max_input_words);
    if (input.empty()) {
      count(filtered, "no long description");
      continue;
    }
    if (target.empty()) {
      count(filtered, "empty short description");
      continue;
    }
    out.push_back({std::move(input), std::string(target), d.md5});
  }
  return out;
}

// Sentence -> "positive" (class 1) / "negative" (class 0), key = the sentence. A sentence seen
// again with the same label is a duplicate (left out); one seen with both labels is left out
// entirely ("conflicting labels"), since no answer is right.
inline std::vector<TextExample> sentiment_examples(const std::vector<SentimentExample>& sentences,
                                                   FilterCounts* filtered = nullptr) {
  using instruction_detail::count;
  std::unordered_map<std::string_view, int> label_of;  // -1: conflicting
  std::vector<TextExample> out;
  for (const SentimentExample& s : sentences) {
    auto [it, fresh] = label_of.emplace(s.text, s.label);
    if (!fresh && it->second != s.label) it->second = -1;
  }
  std::unordered_set<std::string_view> emitted;
  for (const SentimentExample& s : sentences) {
    if (label_of.at(s.text) == -1) {
      count(filtered, "conflicting labels");
      continue;
    }
    if (!emitted.insert(s.text).second) {
      count(filtered, "duplicate");
      continue;
    }
    out.push_back({s.text, s.label == 1 ? "positive" : "negative", s.text});
  }
  return out;
}

// A task's examples split by their keys (splits.hpp). `dropped_by_cap` (optional) receives how
// many validation/test examples the caps left out.
inline TaskSplits split_task(std::string name, std::vector<TextExample> examples, const SplitOptions& options = {},
                             std::size_t* dropped_by_cap = nullptr) {
  Splits<TextExample> s = split_by_key(std::move(examples), options, [](const TextExample& e) -> std::string_view { return e.key; });
  if (dropped_by_cap) *dropped_by_cap = s.dropped_by_cap;
  return TaskSplits{std::move(name), std::move(s.train), std::move(s.validation), std::move(s.test)};
}

// DDTP description text for pre-training: one Document per description (named
// "<package>.<language>", paragraphs = the short description then the long one's paragraphs) of
// the packages whose md5 falls in the TRAIN split under `split`, each md5 once per language. Pass
// the SplitOptions the instruction data was made with, so pre-training never sees a validation or
// test package of translate or summarize.
inline std::vector<Document> ddtp_pretraining_documents(const std::vector<PackageDescription>& descriptions,
                                                        const SplitOptions& split = {}) {
  split.check();
  std::vector<Document> out;
  std::unordered_set<std::string> seen;  // language + md5
  for (const PackageDescription& d : descriptions) {
    if (split_of(d.md5, split) != Split::train || !seen.insert(d.language + d.md5).second) continue;
    Document doc{d.package + "." + d.language, {}};
    if (!text_detail::trim(d.short_text).empty()) doc.paragraphs.emplace_back(text_detail::trim(d.short_text));
    for (const std::string& p : d.paragraphs) doc.paragraphs.push_back(p);
    if (!doc.paragraphs.empty()) out.push_back(std::move(doc));
  }
  return out;
}

// ddtp_pretraining_documents of <data_dir>/ddtp/Translation-en, then of Translation-fr.
inline std::vector<Document> read_ddtp_pretraining_documents(const std::filesystem::path& data_dir,
                                                             const SplitOptions& split = {}) {
  std::vector<Document> out = ddtp_pretraining_documents(read_ddtp(data_dir / "ddtp" / "Translation-en"), split);
  for (Document& d : ddtp_pretraining_documents(read_ddtp(data_dir / "ddtp" / "Translation-fr"), split))
    out.push_back(std::move(d));
  return out;
}

// ------------------------------------------------------------------------------------------------
// The cache.

struct PreparedTask {
  std::string name;
  bool rebuilt = false;  // false: the cached files were fresh and left alone
  std::size_t train = 0, validation = 0, test = 0;
  FilterCounts filtered;           // examples left out before splitting, by reason
  std::size_t dropped_by_cap = 0;  // validation/test examples over the caps
};

struct PreparationReport {
  std::vector<PreparedTask> tasks;  // translate, summarize, sentiment
  double seconds = 0;               // wall time of the whole call
};

namespace instruction_detail {

inline io::Json options_json(std::string_view task, const InstructionDataOptions& o) {
  io::Json j = io::Json::object();
  const SplitOptions& s = o.split;
  j["validation_fraction"] = s.validation_fraction;
  j["test_fraction"] = s.test_fraction;
  // Caps as strings: no_limit does not fit in a JSON integer (int64).
  j["max_validation_examples"] = std::to_string(s.max_validation_examples);
  j["max_test_examples"] = std::to_string(s.max_test_examples);
  j["seed"] = std::to_string(s.seed);
  if (task == translate_task) {
    j["max_source_words"] = o.translation.max_source_words;
    j["sentence_pairs"] = o.translation.sentence_pairs;
  } else if (task == summarize_task) {
    j["max_input_words"] = o.summarization.max_input_words;
  }
  return j;
}

inline std::vector<std::string> source_files(std::string_view task) {
  if (task == translate_task) return {"ddtp/Translation-en", "ddtp/Translation-fr"};
  if (task == summarize_task) return {"ddtp/Translation-en"};
  return {"sentiment/amazon.json", "sentiment/yelp.json", "sentiment/imdb.json"};
}

// Size and modification time of each source, for the staleness check.
inline io::Json sources_json(const std::filesystem::path& data_dir, std::string_view task) {
  io::Json j = io::Json::array();
  for (const std::string& rel : source_files(task)) {
    const std::filesystem::path p = data_dir / rel;
    std::error_code ec;
    const auto bytes = std::filesystem::file_size(p, ec);
    if (ec)
      throw FileError("[prepare_instruction_data] '" + p.string() + "' is missing (expected the " + std::string(task) +
                      " task's source; scripts/fetch-data.sh downloads it)");
    // As int64 nanoseconds: libc++'s file clock counts in __int128, which std::to_string cannot print.
    const std::int64_t time = std::chrono::duration_cast<std::chrono::duration<std::int64_t, std::nano>>(
                                  std::filesystem::last_write_time(p, ec).time_since_epoch())
                                  .count();
    io::Json s = io::Json::object();
    s["file"] = rel;
    s["bytes"] = static_cast<std::int64_t>(bytes);
    s["mtime"] = std::to_string(time);
    j.push_back(std::move(s));
  }
  return j;
}

inline const char* const split_files[3] = {"train.jsonl", "validation.jsonl", "test.jsonl"};
inline constexpr Split all_splits[3] = {Split::train, Split::validation, Split::test};

// True when <dir>/manifest.json matches (version, options, sources) and every split file has the
// size it records. Any problem reading it just means "not fresh".
inline bool is_fresh(const std::filesystem::path& dir, const io::Json& options, const io::Json& sources) {
  try {
    const io::Json m = io::read_json_file((dir / "manifest.json").string());
    const io::Json* version = m.find("format_version");
    if (!version || !(*version == io::Json(instruction_data_format_version))) return false;
    const io::Json* o = m.find("options");
    const io::Json* s = m.find("sources");
    const io::Json* f = m.find("file_bytes");
    if (!o || !(*o == options) || !s || !(*s == sources) || !f) return false;
    for (const char* name : split_files) {
      const io::Json* bytes = f->find(name);
      std::error_code ec;
      const auto size = std::filesystem::file_size(dir / name, ec);
      if (!bytes || ec || bytes->as_int() != static_cast<std::int64_t>(size)) return false;
    }
    return true;
  } catch (const Error&) {
    return false;
  }
}

inline std::string examples_jsonl(const std::vector<TextExample>& examples) {
  std::string out;
  for (const TextExample& e : examples) {
    io::Json j = io::Json::object();
    j["input"] = e.input;
    j["target"] = e.target;
    j["key"] = e.key;
    out += j.dump();
    out += '\n';
  }
  return out;
}

}  // namespace instruction_detail

// Writes one task into <cache_dir>/<name>/: the three split files (atomically), then the manifest.
// `options` and `sources` go into the manifest as they are (prepare_instruction_data fills them
// for its freshness check; other callers may pass empty objects).
inline void write_task_splits(const std::filesystem::path& cache_dir, const TaskSplits& task,
                              const io::Json& options = io::Json::object(), const io::Json& sources = io::Json::array(),
                              const FilterCounts& filtered = {}, std::size_t dropped_by_cap = 0) {
  using namespace instruction_detail;
  const std::filesystem::path dir = cache_dir / task.name;
  std::filesystem::create_directories(dir);
  std::filesystem::remove(dir / "manifest.json");  // not complete until the new manifest is written
  io::Json manifest = io::Json::object();
  manifest["format_version"] = instruction_data_format_version;
  manifest["task"] = task.name;
  manifest["fields"] = io::Json(io::Json::Array{"input", "target", "key"});
  manifest["options"] = options;
  manifest["sources"] = sources;
  io::Json counts = io::Json::object(), bytes = io::Json::object(), left_out = io::Json::object();
  for (int i = 0; i < 3; ++i) {
    const std::vector<TextExample>& examples = task.split(all_splits[i]);
    const std::string text = examples_jsonl(examples);
    write_jsonl_text(dir / split_files[i], text);
    counts[split_name(all_splits[i])] = examples.size();
    bytes[split_files[i]] = text.size();
  }
  for (const auto& [reason, n] : filtered) left_out[reason] = n;
  manifest["counts"] = counts;
  manifest["file_bytes"] = bytes;
  manifest["filtered"] = left_out;
  manifest["dropped_by_cap"] = dropped_by_cap;
  io::write_json_file((dir / "manifest.json").string(), manifest);
}

// Builds the three tasks from `data_dir` (the layout of scripts/fetch-data.sh) into `cache_dir`
// (conventionally data/instruct), each only when missing or stale (see the top of this file).
// A missing source file is a FileError naming it. Prints nothing: the report says what was done.
inline PreparationReport prepare_instruction_data(const std::filesystem::path& data_dir,
                                                  const std::filesystem::path& cache_dir,
                                                  const InstructionDataOptions& options = {}) {
  using namespace instruction_detail;
  options.split.check();
  const auto start = std::chrono::steady_clock::now();
  PreparationReport report;
  std::vector<PackageDescription> english, french;  // parsed once, on first need
  auto ddtp = [&](std::vector<PackageDescription>& v, const char* file) -> const std::vector<PackageDescription>& {
    if (v.empty()) v = read_ddtp(data_dir / "ddtp" / file);
    return v;
  };
  for (const std::string_view name : {translate_task, summarize_task, sentiment_task}) {
    PreparedTask done;
    done.name = std::string(name);
    const io::Json task_options = options_json(name, options);
    const io::Json sources = sources_json(data_dir, name);
    const std::filesystem::path dir = cache_dir / done.name;
    if (is_fresh(dir, task_options, sources)) {
      const io::Json m = io::read_json_file((dir / "manifest.json").string());
      const io::JsonRef counts = io::JsonRef(m, (dir / "manifest.json").string()).at("counts");
      done.train = static_cast<std::size_t>(counts.at("train").as_int());
      done.validation = static_cast<std::size_t>(counts.at("validation").as_int());
      done.test = static_cast<std::size_t>(counts.at("test").as_int());
      if (const io::Json* f = m.find("filtered"))
        for (const auto& [reason, n] : f->as_object()) done.filtered[reason] = static_cast<std::size_t>(n.as_int());
      if (const io::Json* d = m.find("dropped_by_cap")) done.dropped_by_cap = static_cast<std::size_t>(d->as_int());
      report.tasks.push_back(std::move(done));
      continue;
    }
    std::vector<TextExample> examples;
    if (name == translate_task) {
      examples = translation_examples(ddtp(english, "Translation-en"), ddtp(french, "Translation-fr"), options.translation,
                                      &done.filtered);
    } else if (name == summarize_task) {
      examples = summarization_examples(ddtp(english, "Translation-en"), options.summarization, &done.filtered);
    } else {
      std::vector<SentimentExample> sentences;
      for (const char* f : {"amazon.json", "yelp.json", "imdb.json"})
        for (SentimentExample& s : read_sentiment(data_dir / "sentiment" / f)) sentences.push_back(std::move(s));
      examples = sentiment_examples(sentences, &done.filtered);
    }
    const TaskSplits task = split_task(done.name, std::move(examples), options.split, &done.dropped_by_cap);
    write_task_splits(cache_dir, task, task_options, sources, done.filtered, done.dropped_by_cap);
    done.rebuilt = true;
    done.train = task.train.size(), done.validation = task.validation.size(), done.test = task.test.size();
    report.tasks.push_back(std::move(done));
  }
  report.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  return report;
}

struct LoadedTask {
  TaskSplits splits;
  std::vector<ReadReport> reports;  // train, validation, test
};

// Reads <cache_dir>/<name>/ back through read_jsonl_fields({"input", "target", "key"}). The
// manifest must exist (FileError otherwise: the task was never prepared, or its preparation did
// not finish) and each file must hold as many records as it records: fewer (a file cut at a line
// end) is an error under BadRecordPolicy::error, and counted as rejects under skip.
inline LoadedTask read_prepared_task(const std::filesystem::path& cache_dir, std::string_view name,
                                     BadRecordPolicy policy = BadRecordPolicy::error) {
  using namespace instruction_detail;
  const std::filesystem::path dir = cache_dir / name;
  const std::filesystem::path manifest_path = dir / "manifest.json";
  std::error_code ec;
  if (!std::filesystem::exists(manifest_path, ec))
    throw FileError("[read_prepared_task] '" + manifest_path.string() + "' does not exist (expected a prepared task \"" +
                    std::string(name) + "\"; run prepare_instruction_data first)");
  const io::Json manifest = io::read_json_file(manifest_path.string());
  const io::JsonRef m(manifest, manifest_path.string());
  const std::int64_t version = m.at("format_version").as_int();
  if (version != instruction_data_format_version)
    throw FileError("[read_prepared_task] " + manifest_path.string() + ": expected format_version " +
                    std::to_string(instruction_data_format_version) + ", found " + std::to_string(version) +
                    " (prepare the data again)");
  LoadedTask out;
  out.splits.name = std::string(name);
  for (int i = 0; i < 3; ++i) {
    FieldTable t = read_jsonl_fields(dir / split_files[i], {"input", "target", "key"}, policy);
    const auto expected = static_cast<std::size_t>(m.at("counts").at(split_name(all_splits[i])).as_int());
    const std::size_t found = t.report.records_kept + t.report.records_rejected;
    if (found != expected) {
      const std::string what = t.report.source + ": expected " + std::to_string(expected) +
                               " records (manifest.json), found " + std::to_string(found) + " (was the file cut short?)";
      if (policy == BadRecordPolicy::error || found > expected) throw FileError("[read_prepared_task] " + what);
      t.report.records_rejected += expected - found;
      t.report.rejects_by_reason["missing records"] += expected - found;
      if (t.report.first_rejects.size() < ReadReport::max_listed_rejects) t.report.first_rejects.push_back(what);
    }
    std::vector<TextExample>& examples = out.splits.split(all_splits[i]);
    examples.reserve(t.records.size());
    for (FieldRecord& r : t.records)
      examples.push_back({std::move(r.values[0]), std::move(r.values[1]), std::move(r.values[2])});
    out.reports.push_back(std::move(t.report));
  }
  return out;
}

}  // namespace cerberus::data
