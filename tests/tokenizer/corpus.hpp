// A synthetic English-like corpus for tokenizer tests: sentences of 5-16 words drawn from a fixed
// list of 240 words by a seeded LCG (same text on every platform), so a 500-1000 piece model
// trains in about a second and its vocabulary is predictable (every frequent word can become one piece).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace cerberus::testing_support {

inline const std::vector<std::string>& corpus_words() {
  static const std::vector<std::string> words = {
      "the", "of", "and", "to", "a", "in", "that", "is", "was", "he", "for", "it", "with", "as", "his", "on", "be", "at",
      "by", "had", "not", "are", "but", "from", "or", "have", "an", "they", "which", "one", "you", "were", "her", "all",
      "she", "there", "would", "their", "we", "him", "been", "has", "when", "who", "will", "more", "no", "if", "out",
      "so", "said", "what", "up", "its", "about", "into", "than", "them", "can", "only", "other", "new", "some", "could",
      "time", "these", "two", "may", "then", "do", "first", "any", "my", "now", "such", "like", "our", "over", "man",
      "me", "even", "most", "made", "after", "also", "did", "many", "before", "must", "through", "back", "years",
      "where", "much", "your", "way", "well", "down", "should", "because", "each", "just", "those", "people", "how",
      "too", "little", "state", "good", "very", "make", "world", "still", "own", "see", "men", "work", "long", "get",
      "here", "between", "both", "life", "being", "under", "never", "day", "same", "another", "know", "while", "last",
      "might", "us", "great", "old", "year", "off", "come", "since", "against", "go", "came", "right", "used", "take",
      "three", "whale", "ship", "captain", "sea", "harpoon", "voyage", "sailor", "ocean", "deck", "mast", "storm",
      "nation", "congress", "government", "treaty", "commerce", "citizens", "union", "peace", "war", "republic",
      "revenue", "tariff", "territory", "constitution", "president", "senate", "legislation", "economy", "industry",
      "prosperity", "liberty", "freedom", "justice", "education", "railroad", "currency", "agriculture", "navy",
      "army", "defense", "foreign", "domestic", "public", "national", "federal", "interest", "progress", "future",
      "history", "american", "democracy", "welfare", "security", "children", "families", "workers", "business",
      "energy", "health", "reform", "budget", "deficit", "taxes", "growth", "opportunity", "challenge", "strength",
      "together", "america", "harbor", "island", "whaling", "leviathan", "cabin", "crew", "anchor", "tide", "wind",
      "compass", "lantern", "boat", "oar", "rope", "barrel", "merchant", "country", "people", "honor", "duty", "law"};
  return words;
}

// `count` sentences, capitalised, ending in '.', '?' or '!'.
inline std::vector<std::string> make_corpus(std::size_t count, std::uint64_t seed = 1) {
  const auto& words = corpus_words();
  std::uint64_t s = seed * 0x9E3779B97F4A7C15ull + 1;
  auto next = [&](std::uint64_t n) {
    s = s * 6364136223846793005ull + 1442695040888963407ull;
    return (s >> 33) % n;
  };
  std::vector<std::string> out;
  for (std::size_t i = 0; i < count; ++i) {
    std::string line;
    const std::uint64_t n = 5 + next(12);
    for (std::uint64_t k = 0; k < n; ++k) {
      std::string w = words[next(words.size())];
      if (k == 0) w[0] = static_cast<char>(w[0] - 'a' + 'A');
      line += (k ? " " : "") + w;
    }
    const std::uint64_t end = next(10);
    line += end == 0 ? "?" : end == 1 ? "!" : ".";
    out.push_back(line);
  }
  return out;
}

}  // namespace cerberus::testing_support
