// data/ddtp.hpp on small inline Translation files: fields, paragraphs, the md5 join and its
// paragraph-count rule, and malformed input reported with file and line.
#include <string>
#include <vector>

#include "cerberus/data/ddtp.hpp"
#include "support/catch.hpp"
#include "support/message.hpp"
#include "support/temp_dir.hpp"

using namespace cerberus;
using cerberus::testing_support::message_of;
using cerberus::testing_support::TempDir;
using Strings = std::vector<std::string>;
using Kind = data::TranslationPair::Kind;

namespace {

const char* const english =
    "Package: 0ad\n"
    "Description-md5: d943033bedada21853d2ae54a2578a7b\n"
    "Description-en: Real-time strategy game of ancient warfare\n"
    " 0 A.D. is a free, open-source, cross-platform real-time strategy\n"
    " game of ancient warfare.\n"
    " .\n"
    " This package contains the game.\n"
    "\n"
    "Package: aalib\n"
    "Description-md5: 11111111111111111111111111111111\n"
    "Description-en: ascii art library\n"
    " First paragraph.\n"
    " .\n"
    " Second paragraph.\n"
    "\n"
    "Package: onlyen\n"
    "Description-md5: 22222222222222222222222222222222\n"
    "Description-en: not translated\n"
    "\n"
    "Package: 0ad-copy\n"  // same description as 0ad: joined once
    "Description-md5: d943033bedada21853d2ae54a2578a7b\n"
    "Description-en: Real-time strategy game of ancient warfare\n";

const char* const french =
    "Package: 0ad\n"
    "Description-md5: d943033bedada21853d2ae54a2578a7b\n"
    "Description-fr: jeu de stratégie en temps réel\n"
    " 0 A.D. est un jeu de stratégie en temps réel\n"
    " libre.\n"
    " .\n"
    " Ce paquet contient le jeu.\n"
    "\n"
    "\n"
    "Package: aalib\n"
    "Description-md5: 11111111111111111111111111111111\n"
    "Description-fr: bibliothèque d'art ASCII\n"
    " Un seul paragraphe.\n";

}  // namespace

TEST_CASE("parse_ddtp reads records, short and long descriptions, paragraphs") {
  const auto en = data::parse_ddtp(english, "Translation-en");
  REQUIRE(en.size() == 4);
  CHECK(en[0].package == "0ad");
  CHECK(en[0].md5 == "d943033bedada21853d2ae54a2578a7b");
  CHECK(en[0].language == "en");
  CHECK(en[0].short_text == "Real-time strategy game of ancient warfare");
  CHECK(en[0].paragraphs ==
        Strings{"0 A.D. is a free, open-source, cross-platform real-time strategy game of ancient warfare.",
                "This package contains the game."});
  CHECK(en[2].paragraphs.empty());
  const auto fr = data::parse_ddtp(french, "Translation-fr");
  REQUIRE(fr.size() == 2);  // two blank lines between records are fine
  CHECK(fr[1].language == "fr");
  CHECK(fr[1].paragraphs == Strings{"Un seul paragraphe."});
}

TEST_CASE("align_translations joins on md5: short pairs always, paragraphs when counts match") {
  const auto pairs = data::align_translations(data::parse_ddtp(english), data::parse_ddtp(french));
  REQUIRE(pairs.size() == 4);
  CHECK(pairs[0].kind == Kind::short_description);
  CHECK(pairs[0].source == "Real-time strategy game of ancient warfare");
  CHECK(pairs[0].target == "jeu de stratégie en temps réel");
  CHECK(pairs[1].kind == Kind::paragraph);
  CHECK(pairs[1].target == "0 A.D. est un jeu de stratégie en temps réel libre.");
  CHECK(pairs[2].source == "This package contains the game.");
  CHECK(pairs[2].target == "Ce paquet contient le jeu.");
  // aalib: 2 English paragraphs vs 1 French, so only the short pair.
  CHECK(pairs[3].package == "aalib");
  CHECK(pairs[3].kind == Kind::short_description);
  CHECK(pairs[3].target == "bibliothèque d'art ASCII");
}

TEST_CASE("malformed Translation files: errors name the file and the line") {
  CHECK(message_of([] { data::parse_ddtp("Package: a\nDescription-md5: 11111111111111111111111111111111\nDescription-en: x\njunk line\n", "Translation-en"); }) ==
        "[read_ddtp] Translation-en:4: expected 'Field: value' or a continuation line starting with a space, found 'junk line'");
  CHECK(message_of([] { data::parse_ddtp(" orphan continuation\n", "T"); }) ==
        "[read_ddtp] T:1: continuation line ' orphan continuation' before any field");
  CHECK(message_of([] { data::parse_ddtp("Package: a\nDescription-en: x\n\n", "T"); }) ==
        "[read_ddtp] T:1: record for package 'a' has no 'Description-md5:' field");
  CHECK(message_of([] { data::parse_ddtp("\n\nPackage: b\nDescription-md5: 11111111111111111111111111111111\n", "T"); }) ==
        "[read_ddtp] T:3: record for package 'b' has no 'Description-<language>:' field");
  CHECK(message_of([] { data::parse_ddtp("Package: a\nDescription-md5: XYZ\n", "T"); }) ==
        "[read_ddtp] T:2: expected a 32-digit lowercase hex Description-md5, found 'XYZ'");
  CHECK(message_of([] { data::parse_ddtp("Description-md5: 11111111111111111111111111111111\nDescription-en: x\n", "T"); }) ==
        "[read_ddtp] T:1: record has no 'Package:' field");
}

TEST_CASE("read_ddtp names the file it could not find, and reads a real file") {
  TempDir dir;
  const std::string missing = (dir / "Translation-xx").string();
  CHECK(message_of([&] { data::read_ddtp(missing); }) ==
        "[read_ddtp] '" + missing + "' does not exist (expected a Debian Translation-<language> file)");
  const auto path = dir.write("Translation-fr", french);
  CHECK(data::read_ddtp(path).size() == 2);
  // Errors in a file use its name.
  const auto bad = dir.write("Translation-bad", "Package: a\nno colon here\n");
  CHECK(message_of([&] { data::read_ddtp(bad); }) ==
        "[read_ddtp] Translation-bad:2: expected 'Field: value' or a continuation line starting with a space, found 'no colon here'");
}
