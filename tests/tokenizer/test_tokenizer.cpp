// tokenizer/tokenizer.hpp on a 600-piece unigram model trained in memory once: round trips,
// special tokens and user-defined symbols as single ids, vocabulary look-ups, save/load and
// serialized() giving identical encodings, and the errors for missing, malformed and truncated
// model files.
#include <algorithm>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "cerberus/tokenizer.hpp"
#include "support/catch.hpp"
#include "support/message.hpp"
#include "support/temp_dir.hpp"
#include "tokenizer/corpus.hpp"

using namespace cerberus;
using cerberus::testing_support::message_of;
using cerberus::testing_support::TempDir;
using tokenizer::Id;
using Ids = std::vector<Id>;

namespace {

tokenizer::TrainerOptions options() {
  tokenizer::TrainerOptions o;
  o.vocab_size = 600;
  o.user_defined_symbols = {"<sep>", "<translate>", "<summarize>"};
  return o;
}

// Trained once for the whole file (about a second).
const tokenizer::Tokenizer& model() {
  static const tokenizer::Tokenizer tok = tokenizer::train(options(), testing_support::make_corpus(3000)).tokenizer;
  return tok;
}

}  // namespace

TEST_CASE("decode(encode(x)) == x for normalised text, seen and unseen sentences") {
  const auto& tok = model();
  REQUIRE(tok.vocab_size() == 600);
  for (const std::string& s : testing_support::make_corpus(50, /*seed=*/99)) {  // not the training sentences
    const Ids ids = tok.encode(s);
    REQUIRE(!ids.empty());
    CHECK(tok.decode(ids) == s);
    for (Id id : ids) CHECK(id != tok.unk_id());
  }
  // Words never seen in training, made of seen letters, still round-trip (as several pieces).
  const std::string unseen = "Harpoons bargain with thundering leviathans";
  CHECK(tok.decode(tok.encode(unseen)) == unseen);
  CHECK(tok.encode(unseen).size() > 5);
}

TEST_CASE("frequent words are single pieces and pieces() agrees with encode()") {
  const auto& tok = model();
  const auto pieces = tok.pieces("The whale and the ship");
  CHECK(pieces == std::vector<std::string>{"▁The", "▁whale", "▁and", "▁the", "▁ship"});
  const Ids ids = tok.encode("The whale and the ship");
  REQUIRE(ids.size() == pieces.size());
  for (std::size_t i = 0; i < ids.size(); ++i) {
    CHECK(tok.piece_of(ids[i]) == pieces[i]);
    CHECK(tok.id_of(pieces[i]) == ids[i]);
  }
}

TEST_CASE("special tokens: configured ids, add_bos/add_eos, decode drops them") {
  const auto& tok = model();
  CHECK(tok.pad_id() == 0);
  CHECK(tok.unk_id() == 1);
  CHECK(tok.bos_id() == 2);
  CHECK(tok.eos_id() == 3);
  CHECK(tok.piece_of(0) == "<pad>");
  CHECK(tok.piece_of(1) == "<unk>");
  CHECK(tok.piece_of(2) == "<s>");
  CHECK(tok.piece_of(3) == "</s>");
  const Ids plain = tok.encode("The sea.");
  const Ids both = tok.encode("The sea.", {.add_bos = true, .add_eos = true});
  REQUIRE(both.size() == plain.size() + 2);
  CHECK(both.front() == 2);
  CHECK(both.back() == 3);
  CHECK(Ids(both.begin() + 1, both.end() - 1) == plain);
  CHECK(tok.decode(both) == "The sea.");
  Ids padded = plain;
  padded.insert(padded.end(), {0, 0, 0});
  CHECK(tok.decode(padded) == "The sea.");
  // Characters the model never saw become <unk> (no byte_fallback in this model).
  const Ids unk = tok.encode("東");
  CHECK(std::find(unk.begin(), unk.end(), tok.unk_id()) != unk.end());
}

TEST_CASE("user-defined symbols are never split and are one id wherever they occur") {
  const auto& tok = model();
  const Id sep = tok.id_of("<sep>");
  const Id translate = tok.id_of("<translate>");
  // Right after the special ids, in the order given.
  CHECK(sep == 4);
  CHECK(translate == 5);
  CHECK(tok.id_of("<summarize>") == 6);
  // The text's first symbol gets SentencePiece's dummy-prefix space as its own piece first.
  CHECK(tok.pieces("<sep>") == std::vector<std::string>{"▁", "<sep>"});
  CHECK(tok.encode("<sep>") == Ids{tok.id_of("▁"), sep});
  // Inside text, glued to words or not, the marker stays whole and counts once.
  const Ids ids = tok.encode("<translate> the ship<sep>the sea <sep>");
  CHECK(std::count(ids.begin(), ids.end(), sep) == 2);
  CHECK(std::count(ids.begin(), ids.end(), translate) == 1);
  for (Id id : ids) CHECK(id != tok.unk_id());
  CHECK(tok.decode(ids) == "<translate> the ship<sep>the sea <sep>");
  // The symbol's characters alone do not form it.
  const Ids broken = tok.encode("<se p>");
  CHECK(std::count(broken.begin(), broken.end(), sep) == 0);
}

TEST_CASE("without the dummy prefix, encode(\"<sep>\") is exactly one id") {
  auto o = options();
  o.add_dummy_prefix = false;
  const auto tok = tokenizer::train(o, testing_support::make_corpus(3000)).tokenizer;
  CHECK(tok.encode("<sep>") == Ids{tok.id_of("<sep>")});
  CHECK(tok.encode("<summarize>", {.add_eos = true}) == Ids{tok.id_of("<summarize>"), tok.eos_id()});
  CHECK(tok.decode(tok.encode("The whale<sep>The sea")) == "The whale<sep>The sea");
}

TEST_CASE("encode_batch equals encode on each text") {
  const auto& tok = model();
  const std::vector<std::string> texts = {"The whale.", "", "A ship <sep> a sea."};
  const auto batch = tok.encode_batch(texts, {.add_eos = true});
  REQUIRE(batch.size() == 3);
  for (std::size_t i = 0; i < texts.size(); ++i) CHECK(batch[i] == tok.encode(texts[i], {.add_eos = true}));
  CHECK(batch[1] == Ids{3});  // empty text: just </s>
}

TEST_CASE("save/load and serialized/from_serialized give identical encodings") {
  const auto& tok = model();
  TempDir dir;
  const auto path = dir / "m.model";
  tok.save(path);
  // Atomic save leaves exactly the model file, no temporary.
  CHECK(std::distance(std::filesystem::directory_iterator(dir.path()), std::filesystem::directory_iterator()) == 1);
  const auto loaded = tokenizer::Tokenizer::load(path);
  const auto copy = tokenizer::Tokenizer::from_serialized(tok.serialized());
  CHECK(loaded.serialized() == tok.serialized());
  CHECK(std::filesystem::file_size(path) == tok.serialized().size());
  for (const std::string& s : testing_support::make_corpus(20, 5)) {
    CHECK(loaded.encode(s) == tok.encode(s));
    CHECK(copy.encode(s) == tok.encode(s));
  }
  CHECK(loaded.id_of("<sep>") == tok.id_of("<sep>"));
  // Saving over an existing file replaces it.
  tok.save(path);
  CHECK(tokenizer::Tokenizer::load(path).vocab_size() == 600);
}

TEST_CASE("load errors name the file, what was expected and SentencePiece's message") {
  TempDir dir;
  const std::string missing = (dir / "missing.model").string();
  CHECK(message_of([&] { tokenizer::Tokenizer::load(missing); }) ==
        "[Tokenizer::load] '" + missing + "' does not exist (expected a SentencePiece .model file)");

  const std::string junk = dir.write("junk.model", "this is not a protobuf model").string();
  const std::string msg = message_of([&] { tokenizer::Tokenizer::load(junk); });
  CHECK(msg.starts_with("[Tokenizer::load] '" + junk + "' (28 bytes) is not a SentencePiece model: expected a serialized "
                        "ModelProto with a vocabulary (SentencePiece: "));
  CHECK(msg.size() > 160);  // SentencePiece's own status text follows

  // A truncated real model is refused too, not half-loaded.
  const std::string full = model().serialized();
  const std::string half = dir.write("half.model", full.substr(0, full.size() / 2)).string();
  CHECK(message_of([&] { tokenizer::Tokenizer::load(half); }).find("is not a SentencePiece model") != std::string::npos);

  CHECK(message_of([] { tokenizer::Tokenizer::from_serialized(""); })
            .starts_with("[Tokenizer::from_serialized] the serialized model (0 bytes) is not a SentencePiece model"));
  CHECK(message_of([&] { tokenizer::Tokenizer::load(dir.path()); }) ==
        "[Tokenizer::load] '" + dir.path().string() + "' is a directory (expected a SentencePiece .model file)");
}

TEST_CASE("look-up errors: unknown pieces, ids out of range, absent special tokens, no model") {
  const auto& tok = model();
  CHECK(message_of([&] { tok.id_of("<sepp>"); }) == "[Tokenizer::id_of] '<sepp>' is not a piece of the vocabulary (600 pieces)");
  CHECK(tok.contains("<unk>"));
  CHECK(!tok.contains("<sepp>"));
  CHECK(message_of([&] { tok.piece_of(600); }) == "[Tokenizer::piece_of] id 600 is outside the vocabulary [0, 600)");
  CHECK(message_of([&] { tok.decode(Ids{5, 7, -1}); }) ==
        "[Tokenizer::decode] id -1 at position 2 is outside the vocabulary [0, 600)");

  auto o = options();
  o.pad_id = -1;
  o.bos_id = -1;
  o.unk_id = 0;
  o.eos_id = 1;
  const auto no_pad = tokenizer::train(o, testing_support::make_corpus(3000)).tokenizer;
  CHECK(!no_pad.has_pad());
  CHECK(!no_pad.has_bos());
  CHECK(no_pad.has_eos());
  CHECK(no_pad.eos_id() == 1);
  CHECK(no_pad.unk_id() == 0);
  CHECK(message_of([&] { no_pad.pad_id(); }) ==
        "[Tokenizer::pad_id] this model has no <pad> token (it was trained with its id set to -1; see TrainerOptions)");
  CHECK(message_of([&] { no_pad.encode("x", {.add_bos = true}); }).starts_with("[Tokenizer::bos_id] this model has no <s> token"));

  const tokenizer::Tokenizer empty;
  CHECK(!empty.loaded());
  CHECK(message_of([&] { empty.encode("x"); }) ==
        "[Tokenizer::encode] no model loaded (use Tokenizer::load, from_serialized or train)");
}
