// Plain-text splitting: paragraphs into sentences, and text into chunks of at most N bytes that
// never cut a word or a UTF-8 character unless a single word is longer than N.
//
// Why: real corpora come with very long lines (every State of the Union address is ONE line of
// 8-217 KB), and SentencePiece's trainer silently drops lines over 4192 bytes; language-model
// batches want bounded pieces too.
//
// Sentence rule (deliberately minimal, ASCII punctuation only): a sentence ends after '.', '?' or
// '!', optionally followed by closing quotes or brackets (" ' ) ] and the UTF-8 quotes U+201D,
// U+2019), when whitespace follows and the next word does not start with a lowercase ASCII letter.
// A '.' does not end a sentence after
//   - a short title or abbreviation from a fixed list: Mr. Mrs. Ms. Dr. St. Jr. Sr. Prof. Gen.
//     Gov. Sen. Rep. Hon. Rev. Col. Capt. Lt. Mt. No. vs. cf. Jan. Feb. Aug. Sept. Oct. Nov. Dec.
//   - an initialism: single letters each followed by a dot (U.S., D.C., e.g., i.e., the "J." of
//     "John J. Smith"); so "... in the U.S. The next ..." stays one sentence (a known miss).
// Sentences are trimmed of surrounding whitespace; inner whitespace is kept as it is.
#pragma once

#include <algorithm>
#include <iterator>
#include <cstddef>
#include <string>
#include <string_view>
#include <vector>

#include "cerberus/core/error.hpp"

namespace cerberus::data {

namespace text_detail {

inline bool is_space(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v'; }
inline bool is_lower(char c) { return c >= 'a' && c <= 'z'; }
inline bool is_alpha(char c) { return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z'); }

inline std::string_view trim(std::string_view s) {
  while (!s.empty() && is_space(s.front())) s.remove_prefix(1);
  while (!s.empty() && is_space(s.back())) s.remove_suffix(1);
  return s;
}

// The word that ends at `dot` (inclusive), e.g. "Mr." or "U.S.".
inline std::string_view word_ending_at(std::string_view text, std::size_t dot) {
  std::size_t begin = dot;
  while (begin > 0 && !is_space(text[begin - 1])) --begin;
  std::string_view word = text.substr(begin, dot + 1 - begin);
  // An opening quote or bracket is not part of the word: ("Mr. -> Mr.
  while (!word.empty() && (word.front() == '"' || word.front() == '\'' || word.front() == '(' || word.front() == '['))
    word.remove_prefix(1);
  return word;
}

// "U.S.", "e.g.", "J.": letters each followed by one dot.
inline bool is_initialism(std::string_view word) {
  if (word.size() < 2 || word.size() % 2 != 0) return false;
  for (std::size_t i = 0; i < word.size(); i += 2)
    if (!is_alpha(word[i]) || word[i + 1] != '.') return false;
  return true;
}

inline bool is_abbreviation(std::string_view word) {
  static constexpr std::string_view known[] = {
      "Mr.", "Mrs.", "Ms.", "Dr.", "St.", "Jr.", "Sr.", "Prof.", "Gen.", "Gov.", "Sen.", "Rep.", "Hon.", "Rev.",
      "Col.", "Capt.", "Lt.", "Mt.", "No.", "vs.", "cf.", "Jan.", "Feb.", "Aug.", "Sept.", "Oct.", "Nov.", "Dec."};
  return std::find(std::begin(known), std::end(known), word) != std::end(known);
}

// If a closing quote or bracket starts at i, its length in bytes, else 0.
inline std::size_t closer_at(std::string_view text, std::size_t i) {
  const char c = text[i];
  if (c == '"' || c == '\'' || c == ')' || c == ']') return 1;
  if (text.substr(i, 3) == "\xE2\x80\x9D" || text.substr(i, 3) == "\xE2\x80\x99") return 3;  // U+201D, U+2019
  return 0;
}

// Backs `pos` up to the start of a UTF-8 character (never inside a multi-byte sequence).
inline std::size_t utf8_boundary_at_or_before(std::string_view text, std::size_t pos) {
  while (pos > 0 && pos < text.size() && (static_cast<unsigned char>(text[pos]) & 0xC0) == 0x80) --pos;
  return pos;
}

}  // namespace text_detail

// Splits one paragraph into sentences by the rule at the top of this file. Empty input gives no
// sentences; text without a boundary gives itself, trimmed.
inline std::vector<std::string> split_sentences(std::string_view paragraph) {
  using namespace text_detail;
  std::vector<std::string> out;
  std::size_t start = 0;
  const std::size_t n = paragraph.size();
  for (std::size_t i = 0; i < n; ++i) {
    const char c = paragraph[i];
    if (c != '.' && c != '?' && c != '!') continue;
    std::size_t end = i + 1;  // one past the sentence's last byte
    while (end < n) {
      const std::size_t len = closer_at(paragraph, end);
      if (len == 0) break;
      end += len;
    }
    if (end >= n || !is_space(paragraph[end])) continue;
    std::size_t next = end;
    while (next < n && is_space(paragraph[next])) ++next;
    if (next >= n || is_lower(paragraph[next])) continue;
    if (c == '.') {
      const std::string_view word = word_ending_at(paragraph, i);
      if (is_abbreviation(word) || is_initialism(word)) continue;
    }
    const std::string_view sentence = trim(paragraph.substr(start, end - start));
    if (!sentence.empty()) out.emplace_back(sentence);
    start = next;
    i = next - 1;
  }
  const std::string_view rest = trim(paragraph.substr(std::min(start, n)));
  if (!rest.empty()) out.emplace_back(rest);
  return out;
}

// Splits `text` into pieces of at most `max_bytes` bytes, losing no non-space character and
// keeping their order: whole sentences are packed greedily (joined by one space) while they fit; a
// sentence longer than max_bytes is cut at the last whitespace that fits, and a single word longer
// than max_bytes at the last UTF-8 character boundary that fits. Pieces are trimmed, never empty.
// max_bytes must be at least 4, the longest UTF-8 character.
inline std::vector<std::string> chunk_text(std::string_view text, std::size_t max_bytes) {
  using namespace text_detail;
  if (max_bytes < 4)
    throw ValueError("[chunk_text] max_bytes must be at least 4 (the longest UTF-8 character), got " +
                     std::to_string(max_bytes));
  // 1. Sentences, each cut to fit.
  std::vector<std::string> pieces;
  for (const std::string& sentence : split_sentences(text)) {
    std::string_view rest = sentence;
    while (rest.size() > max_bytes) {
      std::size_t cut = max_bytes;  // the piece is rest[0, cut)
      while (cut > 0 && !is_space(rest[cut])) --cut;
      if (cut == 0) {
        cut = utf8_boundary_at_or_before(rest, max_bytes);
        if (cut == 0) cut = max_bytes;  // invalid UTF-8 (a run of continuation bytes): cut anyway
      }
      pieces.emplace_back(trim(rest.substr(0, cut)));
      rest = trim(rest.substr(cut));
    }
    if (!rest.empty()) pieces.emplace_back(rest);
  }
  // 2. Greedy packing of consecutive pieces.
  std::vector<std::string> chunks;
  for (std::string& piece : pieces) {
    if (piece.empty()) continue;
    if (!chunks.empty() && chunks.back().size() + 1 + piece.size() <= max_bytes) {
      chunks.back() += ' ';
      chunks.back() += piece;
    } else {
      chunks.push_back(std::move(piece));
    }
  }
  return chunks;
}

}  // namespace cerberus::data
