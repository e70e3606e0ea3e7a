// data/text_corpus.hpp and data/fortunes.hpp on temporary files: paragraphs from both file
// layouts, name order, deterministic seeded shuffle and document split, chunking, and errors that
// name the folder or file.
#include <algorithm>
#include <set>
#include <string>
#include <vector>

#include "cerberus/data/fortunes.hpp"
#include "cerberus/data/text_corpus.hpp"
#include "support/catch.hpp"
#include "support/message.hpp"
#include "support/temp_dir.hpp"

using namespace cerberus;
using cerberus::testing_support::message_of;
using cerberus::testing_support::TempDir;
using Strings = std::vector<std::string>;

TEST_CASE("split_paragraphs: blank lines separate paragraphs, wrapped lines join with one space") {
  CHECK(data::split_paragraphs("One line paragraph.\n\nWrapped\n  paragraph\r\nhere.\n\n\n  \nLast") ==
        Strings{"One line paragraph.", "Wrapped paragraph here.", "Last"});
  CHECK(data::split_paragraphs("\n\n \n").empty());
  // SOTU layout: a whole address on one line without a final newline.
  CHECK(data::split_paragraphs("A whole address. On one line.") == Strings{"A whole address. On one line."});
}

TEST_CASE("read_text_documents reads *.txt in name order and drops empty files") {
  TempDir dir;
  dir.write("b.txt", "Second doc.\n\nIts second paragraph.\n");
  dir.write("a.txt", "First doc.");
  dir.write("empty.txt", "\n\n");
  dir.write("notes.md", "not a text file for us");
  const auto docs = data::read_text_documents(dir.path());
  REQUIRE(docs.size() == 2);
  CHECK(docs[0].name == "a.txt");
  CHECK(docs[0].paragraphs == Strings{"First doc."});
  CHECK(docs[1].name == "b.txt");
  CHECK(docs[1].paragraphs == Strings{"Second doc.", "Its second paragraph."});
  CHECK(data::read_text_documents(dir.path(), ".md").at(0).name == "notes.md");
}

TEST_CASE("read_text_documents errors name the folder and what was expected") {
  TempDir dir;
  const std::string missing = (dir / "nope").string();
  CHECK(message_of([&] { data::read_text_documents(missing); }) ==
        "[read_text_documents] '" + missing + "' is not a directory (expected a folder of *.txt files; "
        "scripts/fetch-data.sh downloads the corpora)");
  CHECK(message_of([&] { data::read_text_documents(dir.path()); }) ==
        "[read_text_documents] '" + dir.path().string() + "' holds no *.txt files (expected at least one)");
}

TEST_CASE("shuffle is a seeded permutation, the same on every run") {
  std::vector<int> a(50), b;
  for (int i = 0; i < 50; ++i) a[static_cast<std::size_t>(i)] = i;
  b = a;
  std::vector<int> c = a;
  data::shuffle(a, 7);
  data::shuffle(b, 7);
  data::shuffle(c, 8);
  CHECK(a == b);
  CHECK(a != c);
  std::vector<int> sorted = a;
  std::sort(sorted.begin(), sorted.end());
  for (int i = 0; i < 50; ++i) CHECK(sorted[static_cast<std::size_t>(i)] == i);  // a permutation
  // Pinned: the order depends only on the seed and Philox, not on the standard library.
  std::vector<int> small{0, 1, 2, 3, 4};
  data::shuffle(small, 1);
  std::vector<int> again{0, 1, 2, 3, 4};
  data::shuffle(again, 1);
  CHECK(small == again);
  CHECK(small != std::vector<int>{0, 1, 2, 3, 4});
}

TEST_CASE("split_documents splits by document, deterministically, keeping order on each side") {
  std::vector<data::Document> docs;
  for (int i = 0; i < 20; ++i) {
    // Built with append: GCC 12 warns falsely (-Wrestrict) on "literal" + std::string&&.
    std::string name = "d", text = "Paragraph of doc ";
    docs.push_back({name.append(std::to_string(100 + i)), {text.append(std::to_string(i)).append(".")}});
  }
  const auto s1 = data::split_documents(docs, 0.25, 3);
  const auto s2 = data::split_documents(docs, 0.25, 3);
  const auto s3 = data::split_documents(docs, 0.25, 4);
  REQUIRE(s1.validation.size() == 5);
  REQUIRE(s1.train.size() == 15);
  std::set<std::string> names;
  auto names_of = [](const std::vector<data::Document>& v) {
    Strings n;
    for (const auto& d : v) n.push_back(d.name);
    return n;
  };
  for (const auto& n : names_of(s1.train)) names.insert(n);
  for (const auto& n : names_of(s1.validation)) CHECK(names.insert(n).second);  // disjoint
  CHECK(names.size() == 20);
  CHECK(names_of(s1.validation) == names_of(s2.validation));
  CHECK(names_of(s1.validation) != names_of(s3.validation));
  CHECK(std::is_sorted(s1.train.begin(), s1.train.end(), [](auto& a, auto& b) { return a.name < b.name; }));
  // Tiny fractions still give one validation document; zero gives none.
  CHECK(data::split_documents(docs, 0.001, 1).validation.size() == 1);
  CHECK(data::split_documents(docs, 0.0, 1).validation.empty());
  CHECK(message_of([&] { data::split_documents(docs, 1.0, 1); }) == "[split_documents] validation_fraction must be in [0, 1), got 1.000000");
  CHECK(message_of([&] { data::split_documents({docs[0]}, 0.1, 1); }) ==
        "[split_documents] a validation split needs at least 2 documents, got 1");
}

TEST_CASE("chunk_documents and document_sentences cover every paragraph") {
  const std::vector<data::Document> docs = {
      {"a", {"Mr. Ahab spoke. The crew listened. Then the sea rose again and again and again."}},
      {"b", {"Short one.", "Another paragraph here."}}};
  const auto chunks = data::chunk_documents(docs, 40);
  CHECK(chunks == Strings{"Mr. Ahab spoke. The crew listened.", "Then the sea rose again and again and", "again.",
                          "Short one.", "Another paragraph here."});
  CHECK(data::document_sentences(docs) ==
        Strings{"Mr. Ahab spoke.", "The crew listened.", "Then the sea rose again and again and again.", "Short one.",
                "Another paragraph here."});
}

TEST_CASE("fortunes: %-separated entries, trimmed, empty ones dropped") {
  CHECK(data::parse_fortunes("First fortune.\n%\nSecond,\n  two lines.\n%\n%\nThird\n") ==
        Strings{"First fortune.", "Second,\n  two lines.", "Third"});
  CHECK(data::parse_fortunes("%\nOnly\n%\n") == Strings{"Only"});
  CHECK(data::parse_fortunes("100% sure\n%\n") == Strings{"100% sure"});  // '%' inside a line is text
  TempDir dir;
  CHECK(data::read_fortunes(dir.write("f", "a\r\n%\r\nb")) == Strings{"a", "b"});
  const std::string missing = (dir / "missing").string();
  CHECK(message_of([&] { data::read_fortunes(missing); }) ==
        "[read_fortunes] '" + missing + "' does not exist (expected a fortune file ('%'-separated entries))");
}
