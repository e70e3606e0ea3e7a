// Collation: rendered (prompt, target) pairs + a tokenizer -> padded batches.
//
// Legend: B = examples kept, T = time (longest kept sequence - 1), S = source length.
//
// collate_lm (decoder-only): each example is the sequence  [bos] prompt target [eos]  (bos/eos
// per options), at most max_length tokens; the row is
//   input_ids  int64 [B, T]  sequence[0 .. L-2], then pad_id
//   targets    int64 [B, T]  sequence[1 .. L-1] where that token belongs to the target (or eos),
//                            ignore_index (-100) on every prompt token and on padding, so the loss
//                            covers exactly the target tokens + eos (Alpaca's IGNORE_INDEX)
//   padding    uint8 [B, T]  1 = padded
//   task_id    int64 [B]
//   labels     int64 [B]     classification label per example (-1 where none)
// Too long: the prompt is cut (from the left by default: the text nearest the answer stays), never
// the target; an example whose target alone does not fit (target + eos + one prompt/bos token >
// max_length) is an error by default, or skipped / target-truncated on request, and counted either
// way in CollateReport, which also counts truncated prompts and their dropped tokens.
//
// pack_lm (decoder-only, packed): the same sequences as collate_lm (same tokenization, prompt
// truncation, overlong-target rule, ignore_index on prompt tokens), laid side by side in rows of
// T = max_length - 1 positions: an example of L tokens takes L - 1 positions (its input_ids
// sequence[0 .. L-2]). Greedy first fit in input order: each example goes into the first row of
// the SAME task_id with room left, else opens a new row; deterministic. Extra fields per row:
//   segments   int64 [B, T]  index of the example inside its row (0, 1, ...), -1 on padding
//   positions  int64 [B, T]  position inside the example, restarting at 0 (0 on padding)
//   task_id    int64 [B]     the row's task; labels int64 [B] = -1 (a row holds several examples)
// Attention over such rows needs the segments (nn::Packing, AttentionOptions::segments) so that
// it never crosses examples; to_mtl() carries them. row_examples lists each row's input indices.
//
// collate_seq2seq (encoder-decoder): source_ids [B, S] = prompt [eos], decoder_input [B, T] =
// start target, decoder_targets [B, T] = target eos (-100 on padding).
// collate_classify (heads): ids [B, S] = [bos] prompt [eos], padding, task_id, labels (option index).
//
// The tokenizer is any type with encode(string_view) -> vector<int64>, pad_id(), eos_id(), bos_id()
// (tokenizer::Tokenizer; this header does not include SentencePiece). CollateOptions::sep_id puts a
// separator id (tok.id_of("<sep>")) between prompt and target in collate_lm.
#pragma once

#include <algorithm>
#include <concepts>
#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "cerberus/core/error.hpp"
#include "cerberus/mtl/batch.hpp"
#include "cerberus/tensor/factories.hpp"
#include "cerberus/tensor/tensor.hpp"

namespace cerberus::instruct {

inline constexpr std::int64_t ignore_index = -100;

template <class Tok>
concept TextTokenizer = requires(const Tok& t, std::string_view s) {
  { t.encode(s) } -> std::convertible_to<std::vector<std::int64_t>>;
  { t.pad_id() } -> std::convertible_to<std::int64_t>;
  { t.eos_id() } -> std::convertible_to<std::int64_t>;
  { t.bos_id() } -> std::convertible_to<std::int64_t>;
};

// One rendered example ready to tokenize.
struct TextPair {
  std::string prompt;
  std::string target;
  std::int64_t task_id = 0;
  std::int64_t label = -1;  // classification: option index; -1 = none
};

enum class Truncation { prompt_left, prompt_right, error };
enum class OverlongTarget { error, skip, truncate_target };

struct CollateOptions {
  Index max_length = 512;  // whole sequence (prompt + target + eos [+ bos])
  Truncation truncation = Truncation::prompt_left;
  OverlongTarget overlong_target = OverlongTarget::error;
  bool add_bos = false;
  bool add_eos = true;
  // A separator id put between prompt and target (no loss on it), e.g. tok.id_of("<sep>"); -1 = none.
  // An id, not text: encode("<sep>") would add a dummy-prefix piece.
  std::int64_t sep_id = -1;
  bool pad_to_max_length = false;  // T = max_length - 1 instead of the longest row
};

struct CollateReport {
  std::int64_t examples = 0;
  std::int64_t prompts_truncated = 0;
  std::int64_t prompt_tokens_dropped = 0;
  std::int64_t targets_truncated = 0;
  std::int64_t target_tokens_dropped = 0;
  std::vector<std::int64_t> skipped;  // input indices of examples that did not fit (OverlongTarget::skip)
  std::vector<std::int64_t> kept;     // input index of each batch row
  CollateReport& operator+=(const CollateReport& o) {
    const std::int64_t base = examples;
    examples += o.examples;
    prompts_truncated += o.prompts_truncated;
    prompt_tokens_dropped += o.prompt_tokens_dropped;
    targets_truncated += o.targets_truncated;
    target_tokens_dropped += o.target_tokens_dropped;
    for (auto i : o.skipped) skipped.push_back(base + i);
    for (auto i : o.kept) kept.push_back(base + i);
    return *this;
  }
  std::string summary() const {
    return std::to_string(examples) + " examples: " + std::to_string(prompts_truncated) + " prompts truncated (" +
           std::to_string(prompt_tokens_dropped) + " tokens), " + std::to_string(targets_truncated) + " targets truncated (" +
           std::to_string(target_tokens_dropped) + " tokens), " + std::to_string(skipped.size()) + " skipped";
  }
};

struct LmBatch {
  Tensor<std::int64_t> input_ids;  // [B, T]
  Tensor<std::int64_t> targets;    // [B, T], ignore_index off the target
  Tensor<std::uint8_t> padding;    // [B, T]
  Tensor<std::int64_t> task_id;    // [B]
  Tensor<std::int64_t> labels;     // [B]
  Tensor<std::int64_t> segments;   // [B, T], pack_lm only (undefined = one example per row)
  Tensor<std::int64_t> positions;  // [B, T], pack_lm only
  std::vector<std::vector<std::int64_t>> row_examples;  // pack_lm only: input indices of each row's examples
  CollateReport report;

  // The multi-task batch: ids, padding, task_id, labels, token_labels = targets (+ segments and
  // positions when packed).
  mtl::Batch<float> to_mtl() const {
    mtl::Batch<float> b;
    b.ids = input_ids;
    b.padding = padding;
    b.task_id = task_id;
    b.labels = labels;
    b.token_labels = targets;
    b.segments = segments;
    b.positions = positions;
    return b;
  }
  // The fraction of positions that hold a token (1 - padding share).
  double fill() const {
    if (!padding.defined() || padding.numel() == 0) return 0.0;
    Index kept = 0;
    for (const auto m : padding.contiguous().to_vector()) kept += m ? 0 : 1;
    return static_cast<double>(kept) / static_cast<double>(padding.numel());
  }
};

namespace detail {

// Fits prompt/target token lists into `budget` tokens per the options; false = skip the example.
inline bool fit(std::vector<std::int64_t>& prompt, std::vector<std::int64_t>& target, Index budget, bool bos, std::size_t index,
                const CollateOptions& o, CollateReport& r) {
  const bool sep = o.sep_id >= 0;
  const Index extra = (o.add_eos ? 1 : 0) + (bos ? 1 : 0) + (sep ? 1 : 0);
  // Need at least one token before the first target token to predict it.
  const Index min_prompt = bos || sep ? 0 : 1;
  const Index target_len = static_cast<Index>(target.size()) + extra;
  if (target_len + min_prompt > budget) {
    const std::string what = "[instruct::collate] example " + std::to_string(index) + ": the target alone needs " +
                             std::to_string(target_len + min_prompt) + " tokens (target " + std::to_string(target.size()) +
                             " + eos/bos/one prompt token), max_length is " + std::to_string(budget);
    switch (o.overlong_target) {
      case OverlongTarget::error: throw ValueError(what + " (OverlongTarget::skip or truncate_target to go on, counted)");
      case OverlongTarget::skip: r.skipped.push_back(static_cast<std::int64_t>(index)); return false;
      case OverlongTarget::truncate_target: {
        const Index keep = budget - extra - min_prompt;
        if (keep < 1) throw ValueError(what + ": not even one target token fits");
        r.targets_truncated += 1;
        r.target_tokens_dropped += static_cast<std::int64_t>(target.size()) - keep;
        target.resize(static_cast<std::size_t>(keep));
        const Index room = budget - (keep + extra);
        if (static_cast<Index>(prompt.size()) > room) {
          r.prompts_truncated += 1;
          r.prompt_tokens_dropped += static_cast<std::int64_t>(prompt.size()) - room;
          prompt.erase(prompt.begin(), prompt.end() - room);  // nearest the answer stays
        }
        return true;
      }
    }
  }
  const Index room = budget - target_len;
  if (static_cast<Index>(prompt.size()) > room) {
    if (o.truncation == Truncation::error)
      throw ValueError("[instruct::collate] example " + std::to_string(index) + ": prompt " + std::to_string(prompt.size()) +
                       " + target " + std::to_string(target_len) + " tokens exceed max_length " + std::to_string(budget) +
                       " (Truncation::error)");
    r.prompts_truncated += 1;
    r.prompt_tokens_dropped += static_cast<std::int64_t>(prompt.size()) - room;
    if (o.truncation == Truncation::prompt_left) prompt.erase(prompt.begin(), prompt.end() - room);
    else prompt.resize(static_cast<std::size_t>(room));
  }
  return true;
}

inline Tensor<std::int64_t> vec1(const std::vector<std::int64_t>& v) { return from_vector<std::int64_t>(v, Shape{static_cast<Index>(v.size())}); }

// One decoder-only sequence [bos] prompt [sep] target [eos] of example i, fitted to max_length;
// target_start = the index of its first target token. false = skipped (counted in r).
template <class Tok>
bool lm_sequence(const TextPair& example, std::size_t i, const Tok& tok, const CollateOptions& o, CollateReport& r,
                 std::vector<std::int64_t>& s, std::size_t& target_start) {
  std::vector<std::int64_t> p = tok.encode(example.prompt), t = tok.encode(example.target);
  if (!fit(p, t, o.max_length, o.add_bos, i, o, r)) return false;
  s.clear();
  if (o.add_bos) s.push_back(tok.bos_id());
  s.insert(s.end(), p.begin(), p.end());
  if (o.sep_id >= 0) s.push_back(o.sep_id);
  target_start = s.size();
  s.insert(s.end(), t.begin(), t.end());
  if (o.add_eos) s.push_back(tok.eos_id());
  return true;
}

}  // namespace detail

template <TextTokenizer Tok>
LmBatch collate_lm(std::span<const TextPair> examples, const Tok& tok, const CollateOptions& o = {}) {
  if (o.max_length < 2) throw ValueError("[instruct::collate_lm] max_length must be >= 2, got " + std::to_string(o.max_length));
  LmBatch out;
  CollateReport& r = out.report;
  r.examples = static_cast<std::int64_t>(examples.size());
  std::vector<std::vector<std::int64_t>> seqs;
  std::vector<std::size_t> target_start;
  std::vector<std::int64_t> task_ids, labels;
  for (std::size_t i = 0; i < examples.size(); ++i) {
    std::vector<std::int64_t> s;
    std::size_t start = 0;
    if (!detail::lm_sequence(examples[i], i, tok, o, r, s, start)) continue;
    target_start.push_back(start);
    seqs.push_back(std::move(s));
    task_ids.push_back(examples[i].task_id);
    labels.push_back(examples[i].label);
    r.kept.push_back(static_cast<std::int64_t>(i));
  }
  Index T = o.pad_to_max_length ? o.max_length - 1 : 1;
  for (const auto& s : seqs) T = std::max<Index>(T, static_cast<Index>(s.size()) - 1);
  const Index B = static_cast<Index>(seqs.size());
  const std::int64_t pad = tok.pad_id();
  std::vector<std::int64_t> ids(static_cast<std::size_t>(B * T), pad), tgt(static_cast<std::size_t>(B * T), ignore_index);
  std::vector<std::uint8_t> padm(static_cast<std::size_t>(B * T), 1);
  for (Index b = 0; b < B; ++b) {
    const auto& s = seqs[static_cast<std::size_t>(b)];
    for (std::size_t t = 0; t + 1 < s.size(); ++t) {
      const std::size_t at = static_cast<std::size_t>(b * T) + t;
      ids[at] = s[t];
      padm[at] = 0;
      if (t + 1 >= target_start[static_cast<std::size_t>(b)]) tgt[at] = s[t + 1];
    }
  }
  out.input_ids = from_vector<std::int64_t>(ids, Shape{B, T});
  out.targets = from_vector<std::int64_t>(tgt, Shape{B, T});
  out.padding = from_vector<std::uint8_t>(padm, Shape{B, T});
  out.task_id = detail::vec1(task_ids);
  out.labels = detail::vec1(labels);
  return out;
}

// Packed decoder-only rows; see the top of this file. o.pad_to_max_length is implied (T = max_length - 1).
template <TextTokenizer Tok>
LmBatch pack_lm(std::span<const TextPair> examples, const Tok& tok, const CollateOptions& o = {}) {
  if (o.max_length < 2) throw ValueError("[instruct::pack_lm] max_length must be >= 2, got " + std::to_string(o.max_length));
  LmBatch out;
  CollateReport& r = out.report;
  r.examples = static_cast<std::int64_t>(examples.size());
  const Index T = o.max_length - 1;
  struct Row {
    std::int64_t task;
    Index used = 0;
    std::vector<std::size_t> members;  // indices into seqs
  };
  std::vector<std::vector<std::int64_t>> seqs;
  std::vector<std::size_t> target_start, input_index;
  std::vector<Row> rows;
  for (std::size_t i = 0; i < examples.size(); ++i) {
    std::vector<std::int64_t> s;
    std::size_t start = 0;
    if (!detail::lm_sequence(examples[i], i, tok, o, r, s, start)) continue;
    const Index need = static_cast<Index>(s.size()) - 1;  // positions: sequence[0 .. L-2]
    auto row = std::find_if(rows.begin(), rows.end(), [&](const Row& w) { return w.task == examples[i].task_id && w.used + need <= T; });
    if (row == rows.end()) row = rows.insert(rows.end(), Row{examples[i].task_id, 0, {}});
    row->used += need;
    row->members.push_back(seqs.size());
    seqs.push_back(std::move(s));
    target_start.push_back(start);
    input_index.push_back(i);
    r.kept.push_back(static_cast<std::int64_t>(i));
  }
  const Index B = static_cast<Index>(rows.size());
  const auto n = static_cast<std::size_t>(B * T);
  std::vector<std::int64_t> ids(n, tok.pad_id()), tgt(n, ignore_index), seg(n, -1), pos(n, 0), task_ids;
  std::vector<std::uint8_t> padm(n, 1);
  for (Index b = 0; b < B; ++b) {
    const Row& row = rows[static_cast<std::size_t>(b)];
    task_ids.push_back(row.task);
    out.row_examples.emplace_back();
    std::size_t at = static_cast<std::size_t>(b * T);
    for (std::size_t e = 0; e < row.members.size(); ++e) {
      const std::size_t m = row.members[e];
      const auto& s = seqs[m];
      out.row_examples.back().push_back(static_cast<std::int64_t>(input_index[m]));
      for (std::size_t t = 0; t + 1 < s.size(); ++t, ++at) {
        ids[at] = s[t];
        padm[at] = 0;
        seg[at] = static_cast<std::int64_t>(e);
        pos[at] = static_cast<std::int64_t>(t);
        if (t + 1 >= target_start[m]) tgt[at] = s[t + 1];
      }
    }
  }
  out.input_ids = from_vector<std::int64_t>(ids, Shape{B, T});
  out.targets = from_vector<std::int64_t>(tgt, Shape{B, T});
  out.padding = from_vector<std::uint8_t>(padm, Shape{B, T});
  out.segments = from_vector<std::int64_t>(seg, Shape{B, T});
  out.positions = from_vector<std::int64_t>(pos, Shape{B, T});
  out.task_id = detail::vec1(task_ids);
  out.labels = detail::vec1(std::vector<std::int64_t>(static_cast<std::size_t>(B), -1));
  return out;
}

struct Seq2SeqBatch {
  Tensor<std::int64_t> source_ids;       // [B, S]
  Tensor<std::uint8_t> source_padding;   // [B, S]
  Tensor<std::int64_t> decoder_input;    // [B, T]: start token, then target
  Tensor<std::int64_t> decoder_targets;  // [B, T]: target, eos; ignore_index on padding
  Tensor<std::uint8_t> decoder_padding;  // [B, T]
  Tensor<std::int64_t> task_id;          // [B]
  CollateReport report;
};

// max_source_length bounds prompt + eos (prompts cut per o.truncation); o.max_length bounds the
// decoder side (target + eos + start token is counted as the "one prompt token"). Start token:
// pad_id (T5's convention) unless decoder_start >= 0.
template <TextTokenizer Tok>
Seq2SeqBatch collate_seq2seq(std::span<const TextPair> examples, const Tok& tok, Index max_source_length, const CollateOptions& o = {},
                             std::int64_t decoder_start = -1) {
  if (max_source_length < 2 || o.max_length < 2)
    throw ValueError("[instruct::collate_seq2seq] max lengths must be >= 2, got " + std::to_string(max_source_length) + " and " +
                     std::to_string(o.max_length));
  Seq2SeqBatch out;
  CollateReport& r = out.report;
  r.examples = static_cast<std::int64_t>(examples.size());
  const std::int64_t start = decoder_start >= 0 ? decoder_start : tok.pad_id(), eos = tok.eos_id(), pad = tok.pad_id();
  std::vector<std::vector<std::int64_t>> src, dec;
  std::vector<std::int64_t> task_ids;
  for (std::size_t i = 0; i < examples.size(); ++i) {
    std::vector<std::int64_t> p = tok.encode(examples[i].prompt), t = tok.encode(examples[i].target);
    std::vector<std::int64_t> none;
    // Decoder side: start + target + eos <= max_length (the start token plays the prompt's part).
    CollateOptions dec_o = o;
    dec_o.add_eos = true;
    dec_o.sep_id = -1;
    if (!detail::fit(none, t, o.max_length, /*bos=*/true, i, dec_o, r)) continue;
    const Index room = max_source_length - 1;
    if (static_cast<Index>(p.size()) > room) {
      if (o.truncation == Truncation::error)
        throw ValueError("[instruct::collate_seq2seq] example " + std::to_string(i) + ": source of " + std::to_string(p.size() + 1) +
                         " tokens exceeds max_source_length " + std::to_string(max_source_length) + " (Truncation::error)");
      r.prompts_truncated += 1;
      r.prompt_tokens_dropped += static_cast<std::int64_t>(p.size()) - room;
      if (o.truncation == Truncation::prompt_left) p.erase(p.begin(), p.end() - room);
      else p.resize(static_cast<std::size_t>(room));
    }
    p.push_back(eos);
    std::vector<std::int64_t> d{start};
    d.insert(d.end(), t.begin(), t.end());
    d.push_back(eos);
    src.push_back(std::move(p));
    dec.push_back(std::move(d));
    task_ids.push_back(examples[i].task_id);
    r.kept.push_back(static_cast<std::int64_t>(i));
  }
  const Index B = static_cast<Index>(src.size());
  Index S = 1, T = 1;
  for (Index b = 0; b < B; ++b) {
    S = std::max<Index>(S, static_cast<Index>(src[static_cast<std::size_t>(b)].size()));
    T = std::max<Index>(T, static_cast<Index>(dec[static_cast<std::size_t>(b)].size()) - 1);
  }
  std::vector<std::int64_t> s_ids(static_cast<std::size_t>(B * S), pad), d_in(static_cast<std::size_t>(B * T), pad),
      d_tg(static_cast<std::size_t>(B * T), ignore_index);
  std::vector<std::uint8_t> s_pad(static_cast<std::size_t>(B * S), 1), d_pad(static_cast<std::size_t>(B * T), 1);
  for (Index b = 0; b < B; ++b) {
    const auto& s = src[static_cast<std::size_t>(b)];
    for (std::size_t j = 0; j < s.size(); ++j) {
      s_ids[static_cast<std::size_t>(b * S) + j] = s[j];
      s_pad[static_cast<std::size_t>(b * S) + j] = 0;
    }
    const auto& d = dec[static_cast<std::size_t>(b)];
    for (std::size_t j = 0; j + 1 < d.size(); ++j) {
      d_in[static_cast<std::size_t>(b * T) + j] = d[j];
      d_tg[static_cast<std::size_t>(b * T) + j] = d[j + 1];
      d_pad[static_cast<std::size_t>(b * T) + j] = 0;
    }
  }
  out.source_ids = from_vector<std::int64_t>(s_ids, Shape{B, S});
  out.source_padding = from_vector<std::uint8_t>(s_pad, Shape{B, S});
  out.decoder_input = from_vector<std::int64_t>(d_in, Shape{B, T});
  out.decoder_targets = from_vector<std::int64_t>(d_tg, Shape{B, T});
  out.decoder_padding = from_vector<std::uint8_t>(d_pad, Shape{B, T});
  out.task_id = detail::vec1(task_ids);
  return out;
}

struct ClassifyBatch {
  mtl::Batch<float> batch;  // ids [B, S], padding, task_id, labels
  CollateReport report;
};

// For classification heads: ids = [bos] prompt [eos] (cut per o.truncation to o.max_length),
// labels = each example's option index (an example without one, label < 0, is an error).
template <TextTokenizer Tok>
ClassifyBatch collate_classify(std::span<const TextPair> examples, const Tok& tok, const CollateOptions& o = {}) {
  const Index extra = (o.add_bos ? 1 : 0) + (o.add_eos ? 1 : 0);
  if (o.max_length < extra + 1)
    throw ValueError("[instruct::collate_classify] max_length " + std::to_string(o.max_length) + " leaves no room for the prompt");
  ClassifyBatch out;
  CollateReport& r = out.report;
  r.examples = static_cast<std::int64_t>(examples.size());
  std::vector<std::vector<std::int64_t>> rows;
  std::vector<std::int64_t> task_ids, labels;
  for (std::size_t i = 0; i < examples.size(); ++i) {
    if (examples[i].label < 0)
      throw ValueError("[instruct::collate_classify] example " + std::to_string(i) + " (task " + std::to_string(examples[i].task_id) +
                       ") has no label: its target \"" + examples[i].target + "\" is not an option of a classification task");
    std::vector<std::int64_t> p = tok.encode(examples[i].prompt);
    const Index room = o.max_length - extra;
    if (static_cast<Index>(p.size()) > room) {
      if (o.truncation == Truncation::error)
        throw ValueError("[instruct::collate_classify] example " + std::to_string(i) + ": prompt of " + std::to_string(p.size()) +
                         " tokens exceeds max_length " + std::to_string(o.max_length) + " (Truncation::error)");
      r.prompts_truncated += 1;
      r.prompt_tokens_dropped += static_cast<std::int64_t>(p.size()) - room;
      if (o.truncation == Truncation::prompt_left) p.erase(p.begin(), p.end() - room);
      else p.resize(static_cast<std::size_t>(room));
    }
    std::vector<std::int64_t> s;
    if (o.add_bos) s.push_back(tok.bos_id());
    s.insert(s.end(), p.begin(), p.end());
    if (o.add_eos) s.push_back(tok.eos_id());
    rows.push_back(std::move(s));
    task_ids.push_back(examples[i].task_id);
    labels.push_back(examples[i].label);
    r.kept.push_back(static_cast<std::int64_t>(i));
  }
  const Index B = static_cast<Index>(rows.size());
  Index S = o.pad_to_max_length ? o.max_length : 1;
  for (const auto& s : rows) S = std::max<Index>(S, static_cast<Index>(s.size()));
  std::vector<std::int64_t> ids(static_cast<std::size_t>(B * S), tok.pad_id());
  std::vector<std::uint8_t> padm(static_cast<std::size_t>(B * S), 1);
  for (Index b = 0; b < B; ++b)
    for (std::size_t j = 0; j < rows[static_cast<std::size_t>(b)].size(); ++j) {
      ids[static_cast<std::size_t>(b * S) + j] = rows[static_cast<std::size_t>(b)][j];
      padm[static_cast<std::size_t>(b * S) + j] = 0;
    }
  out.batch.ids = from_vector<std::int64_t>(ids, Shape{B, S});
  out.batch.padding = from_vector<std::uint8_t>(padm, Shape{B, S});
  out.batch.task_id = detail::vec1(task_ids);
  out.batch.labels = detail::vec1(labels);
  return out;
}

}  // namespace cerberus::instruct
