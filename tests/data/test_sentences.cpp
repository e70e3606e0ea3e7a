// data/sentences.hpp: sentence boundaries with the abbreviation and initialism rules, and
// chunk_text's promises (every chunk <= N bytes, no non-space character lost or reordered, no
// UTF-8 character cut, long sentences cut at whitespace).
#include <string>
#include <vector>

#include "cerberus/data/sentences.hpp"
#include "support/catch.hpp"
#include "support/message.hpp"

using namespace cerberus;
using cerberus::testing_support::message_of;
using Strings = std::vector<std::string>;

namespace {

std::string without_spaces(const std::string& s) {
  std::string out;
  for (char c : s)
    if (c != ' ' && c != '\n' && c != '\t') out += c;
  return out;
}

std::string joined(const Strings& parts) {
  std::string out;
  for (const auto& p : parts) out += p;
  return out;
}

bool valid_utf8_boundaries(const std::string& s) {
  // A chunk must not start with a continuation byte nor end inside a multi-byte sequence.
  if (s.empty()) return true;
  if ((static_cast<unsigned char>(s.front()) & 0xC0) == 0x80) return false;
  std::size_t i = s.size();
  std::size_t cont = 0;
  while (i > 0 && (static_cast<unsigned char>(s[i - 1]) & 0xC0) == 0x80) --i, ++cont;
  if (i == 0) return false;
  const auto lead = static_cast<unsigned char>(s[i - 1]);
  const std::size_t need = lead < 0x80 ? 0 : lead >= 0xF0 ? 3 : lead >= 0xE0 ? 2 : 1;
  return cont == need;
}

}  // namespace

TEST_CASE("split_sentences: ., ? and ! followed by space and a non-lowercase word end sentences") {
  CHECK(data::split_sentences("It rained. Was it cold? Yes! Very.") == Strings{"It rained.", "Was it cold?", "Yes!", "Very."});
  // Closing quotes and brackets stay with their sentence.
  CHECK(data::split_sentences("He said \"stop.\" Then he left. (It was late.) Fine.") ==
        Strings{"He said \"stop.\"", "Then he left.", "(It was late.)", "Fine."});
  // A lowercase word after the dot does not start a sentence (ellipses, "etc. and").
  CHECK(data::split_sentences("Wait... and see. Done.") == Strings{"Wait... and see.", "Done."});
  // No space after the dot: numbers, file names, URLs.
  CHECK(data::split_sentences("Version 3.14 of example.com is out. Good.") == Strings{"Version 3.14 of example.com is out.", "Good."});
  // Digits may start a sentence.
  CHECK(data::split_sentences("Costs rose. 1867 was hard.") == Strings{"Costs rose.", "1867 was hard."});
}

TEST_CASE("split_sentences: titles, abbreviations and initialisms do not end sentences") {
  CHECK(data::split_sentences("Mr. Smith met Dr. Jones. They talked.") == Strings{"Mr. Smith met Dr. Jones.", "They talked."});
  CHECK(data::split_sentences("The U.S. Congress met in Washington, D.C. Today it rests.") ==
        Strings{"The U.S. Congress met in Washington, D.C. Today it rests."});  // documented miss: no split after D.C.
  CHECK(data::split_sentences("John F. Kennedy spoke. He was brief.") == Strings{"John F. Kennedy spoke.", "He was brief."});
  CHECK(data::split_sentences("Use a tool, e.g. A hammer. Done.") == Strings{"Use a tool, e.g. A hammer.", "Done."});
  // An opening quote before the abbreviation is not part of it.
  CHECK(data::split_sentences("\"Mr. Brown is here.\" She nodded.") == Strings{"\"Mr. Brown is here.\"", "She nodded."});
}

TEST_CASE("split_sentences: whitespace is trimmed, empty input gives nothing") {
  CHECK(data::split_sentences("").empty());
  CHECK(data::split_sentences("   \n ").empty());
  CHECK(data::split_sentences("  no boundary here  ") == Strings{"no boundary here"});
  CHECK(data::split_sentences("One.   Two.\tThree.") == Strings{"One.", "Two.", "Three."});
}

TEST_CASE("chunk_text packs whole sentences up to max_bytes") {
  const std::string text = "Aa aa. Bb bb. Cc cc. Dd dd.";  // sentences of 6 bytes
  CHECK(data::chunk_text(text, 13) == Strings{"Aa aa. Bb bb.", "Cc cc. Dd dd."});
  CHECK(data::chunk_text(text, 12) == Strings{"Aa aa.", "Bb bb.", "Cc cc.", "Dd dd."});
  CHECK(data::chunk_text(text, 1000) == Strings{text});
  CHECK(data::chunk_text("", 10).empty());
}

TEST_CASE("chunk_text cuts long sentences at whitespace and long words at UTF-8 boundaries") {
  // One 'sentence' of 60 words: cut at spaces, every chunk within the limit.
  std::string sentence;
  for (int i = 0; i < 60; ++i) sentence += (i ? " word" : "Word") + std::to_string(i);
  const auto chunks = data::chunk_text(sentence, 40);
  REQUIRE(chunks.size() > 1);
  for (const auto& c : chunks) {
    CHECK(c.size() <= 40);
    CHECK(c.front() != ' ');
    CHECK(c.back() != ' ');
    CHECK(c.find("ord") != std::string::npos);  // no word was split: each chunk holds whole words
  }
  CHECK(without_spaces(joined(chunks)) == without_spaces(sentence));

  // A single 'word' of 3-byte characters (é is 2 bytes, 東 is 3): never cut inside a character.
  std::string word;
  for (int i = 0; i < 20; ++i) word += "é東";
  const auto pieces = data::chunk_text(word, 7);
  for (const auto& p : pieces) {
    CHECK(p.size() <= 7);
    CHECK(valid_utf8_boundaries(p));
  }
  CHECK(joined(pieces) == word);
}

TEST_CASE("chunk_text loses no text on a mixed paragraph, for every limit") {
  const std::string paragraph =
      "Mr. Ahab stood. \"Where is the whale?\" he asked! The U.S. ship answered no. "
      "Supercalifragilisticexpialidocious-and-then-some is a long word indeed. Naïve café, 東京. End.";
  for (std::size_t max = 4; max <= paragraph.size() + 1; ++max) {
    const auto chunks = data::chunk_text(paragraph, max);
    for (const auto& c : chunks) {
      REQUIRE(!c.empty());
      REQUIRE(c.size() <= max);
      REQUIRE(valid_utf8_boundaries(c));
    }
    REQUIRE(without_spaces(joined(chunks)) == without_spaces(paragraph));
  }
}

TEST_CASE("chunk_text refuses a limit below one UTF-8 character") {
  CHECK(message_of([] { data::chunk_text("abc", 3); }) ==
        "[chunk_text] max_bytes must be at least 4 (the longest UTF-8 character), got 3");
}
