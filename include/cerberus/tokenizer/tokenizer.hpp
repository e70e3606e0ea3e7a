// Tokenizer: text <-> ids through a SentencePiece model (unigram or BPE), the first stage of the
// data flow. Ids are int64 because that is what embedding and cross_entropy take.
//
//   auto tok = cerberus::tokenizer::Tokenizer::load("m.model");
//   std::vector<std::int64_t> ids = tok.encode("Hello world.", {.add_eos = true});
//   std::string text = tok.decode(ids);
//
// Part of the `cerberus::tokenizer` component (links SentencePiece); not included by
// <cerberus/cerberus.hpp>. Every SentencePiece status that is not ok becomes a cerberus error
// carrying SentencePiece's own message.
//
// Special tokens: <unk> always exists; <pad>, <s> (bos) and </s> (eos) exist when the model was
// trained with their id >= 0 (TrainerOptions). decode() drops pad/bos/eos (they are control
// symbols). User-defined symbols (TrainerOptions::user_defined_symbols, e.g. "<sep>") are never
// split: wherever they occur in text they become their one id. Note that SentencePiece prefixes the
// text with a space ("dummy prefix") by default, so encode("<sep>") is {id("▁"), id("<sep>")}; a
// model trained with add_dummy_prefix = false gives {id("<sep>")}. To place a marker exactly,
// concatenate id_of("<sep>") with encoded text.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <initializer_list>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <system_error>
#include <vector>

#include <unistd.h>

#include <sentencepiece_processor.h>

#include "cerberus/core/error.hpp"
#include "cerberus/data/text_file.hpp"

namespace cerberus::tokenizer {

using Id = std::int64_t;

struct EncodeOptions {
  bool add_bos = false;  // prepend <s> (the model must have one)
  bool add_eos = false;  // append </s>
};

class Tokenizer {
 public:
  // An empty tokenizer: every call except loaded() throws until a model is assigned to it.
  Tokenizer() = default;

  // Reads a SentencePiece .model file. A missing file or one that is not a SentencePiece model
  // throws FileError naming the file, what was expected, and SentencePiece's message.
  static Tokenizer load(const std::filesystem::path& path) {
    const std::string bytes = data::read_text_file(path, "Tokenizer::load", "a SentencePiece .model file");
    std::string what = "'";  // not "'" + path.string(): GCC 12 warns falsely (-Wrestrict) on literal + string&&
    what.append(path.string()).append("'");
    return from_bytes(bytes, what, "Tokenizer::load");
  }

  // A model from the bytes of a .model file (what serialized() returns).
  static Tokenizer from_serialized(std::string_view bytes) {
    return from_bytes(bytes, "the serialized model", "Tokenizer::from_serialized");
  }

  bool loaded() const { return sp_ != nullptr; }

  // The model as bytes: exactly the contents of a .model file.
  std::string serialized() const { return processor("serialized").serialized_model_proto(); }

  // Writes the model atomically: to a temporary file in the same directory, then renamed over
  // `path`, so a reader never sees half a model and a crash leaves the old file intact.
  void save(const std::filesystem::path& path) const {
    const std::string bytes = serialized();
    // Unique per process and call, so concurrent saves to one path never share a temporary.
    static std::atomic<unsigned> counter{0};
    std::filesystem::path tmp = path;
    tmp += ".tmp." + std::to_string(::getpid()) + "." + std::to_string(counter++);
    {
      std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
      if (!out) throw FileError("[Tokenizer::save] cannot create '" + tmp.string() + "' (to write '" + path.string() + "')");
      out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
      out.flush();
      if (!out) {
        out.close();
        std::error_code ignore;
        std::filesystem::remove(tmp, ignore);
        throw FileError("[Tokenizer::save] writing " + std::to_string(bytes.size()) + " bytes to '" + tmp.string() +
                        "' failed (disk full?)");
      }
    }
    std::error_code ec;
    std::filesystem::rename(tmp, path, ec);
    if (ec) {
      std::error_code ignore;
      std::filesystem::remove(tmp, ignore);
      throw FileError("[Tokenizer::save] cannot rename '" + tmp.string() + "' to '" + path.string() + "': " + ec.message());
    }
  }

  // ---- encoding ----------------------------------------------------------------------------------
  std::vector<Id> encode(std::string_view text, const EncodeOptions& options = {}) const {
    const auto& sp = processor("encode");
    std::vector<int> raw;
    check(sp.Encode(text, &raw), "encode", text);
    std::vector<Id> ids;
    ids.reserve(raw.size() + 2);
    if (options.add_bos) ids.push_back(bos_id());
    ids.insert(ids.end(), raw.begin(), raw.end());
    if (options.add_eos) ids.push_back(eos_id());
    return ids;
  }

  std::vector<std::vector<Id>> encode_batch(std::span<const std::string> texts, const EncodeOptions& options = {}) const {
    std::vector<std::vector<Id>> out;
    out.reserve(texts.size());
    for (const std::string& text : texts) out.push_back(encode(text, options));
    return out;
  }

  // The pieces encode() would produce, as strings ("▁Hello", "▁world", ".").
  std::vector<std::string> pieces(std::string_view text) const {
    std::vector<std::string> out;
    check(processor("pieces").Encode(text, &out), "pieces", text);
    return out;
  }

  // Text from ids. Control ids (pad, bos, eos) produce no text; an id outside the vocabulary
  // throws IndexError naming its position.
  std::string decode(std::span<const Id> ids) const {
    const auto& sp = processor("decode");
    const Id n = vocab_size();
    std::vector<int> raw;
    raw.reserve(ids.size());
    for (std::size_t i = 0; i < ids.size(); ++i) {
      if (ids[i] < 0 || ids[i] >= n)
        throw IndexError("[Tokenizer::decode] id " + std::to_string(ids[i]) + " at position " + std::to_string(i) +
                         " is outside the vocabulary [0, " + std::to_string(n) + ")");
      raw.push_back(static_cast<int>(ids[i]));
    }
    std::string text;
    check(sp.Decode(raw, &text), "decode", {});
    return text;
  }
  std::string decode(std::initializer_list<Id> ids) const { return decode(std::span<const Id>(ids.begin(), ids.size())); }

  // ---- vocabulary --------------------------------------------------------------------------------
  Id vocab_size() const { return processor("vocab_size").GetPieceSize(); }

  bool contains(std::string_view piece) const {
    const auto& sp = processor("contains");
    const int id = sp.PieceToId(piece);
    return !sp.IsUnknown(id) || sp.IdToPiece(id) == piece;  // unknown pieces map to <unk>
  }
  // The id of a piece of the vocabulary. SentencePiece maps unknown pieces to <unk> silently; here
  // an unknown piece is an error (a misspelt task marker would otherwise train as <unk>).
  Id id_of(std::string_view piece) const {
    if (!contains(piece))
      throw ValueError("[Tokenizer::id_of] '" + std::string(piece) + "' is not a piece of the vocabulary (" +
                       std::to_string(vocab_size()) + " pieces)");
    return processor("id_of").PieceToId(piece);
  }
  std::string piece_of(Id id) const {
    const Id n = vocab_size();
    if (id < 0 || id >= n)
      throw IndexError("[Tokenizer::piece_of] id " + std::to_string(id) + " is outside the vocabulary [0, " + std::to_string(n) + ")");
    return processor("piece_of").IdToPiece(static_cast<int>(id));
  }

  // ---- special tokens ----------------------------------------------------------------------------
  Id unk_id() const { return processor("unk_id").unk_id(); }
  bool has_pad() const { return processor("has_pad").pad_id() >= 0; }
  bool has_bos() const { return processor("has_bos").bos_id() >= 0; }
  bool has_eos() const { return processor("has_eos").eos_id() >= 0; }
  // These throw ValueError when the model has no such token (it was trained with id -1).
  Id pad_id() const { return special(processor("pad_id").pad_id(), "pad_id", "<pad>"); }
  Id bos_id() const { return special(processor("bos_id").bos_id(), "bos_id", "<s>"); }
  Id eos_id() const { return special(processor("eos_id").eos_id(), "eos_id", "</s>"); }

  // The underlying processor, for what this class does not wrap (sampling, n-best).
  const sentencepiece::SentencePieceProcessor& processor() const { return processor("processor"); }

 private:
  static Tokenizer from_bytes(std::string_view bytes, const std::string& what, const char* op) {
    auto sp = std::make_unique<sentencepiece::SentencePieceProcessor>();
    const auto status = sp->LoadFromSerializedProto(bytes);
    if (!status.ok())
      throw FileError(std::string("[") + op + "] " + what + " (" + std::to_string(bytes.size()) +
                      " bytes) is not a SentencePiece model: expected a serialized ModelProto with a vocabulary "
                      "(SentencePiece: " + status.ToString() + ")");
    Tokenizer t;
    t.sp_ = std::move(sp);
    return t;
  }

  const sentencepiece::SentencePieceProcessor& processor(const char* op) const {
    if (!sp_) throw ValueError(std::string("[Tokenizer::") + op + "] no model loaded (use Tokenizer::load, from_serialized or train)");
    return *sp_;
  }

  static void check(const sentencepiece::util::Status& status, const char* op, std::string_view text) {
    if (status.ok()) return;
    std::string msg = std::string("[Tokenizer::") + op + "] SentencePiece failed: " + status.ToString();
    if (!text.empty()) msg += " (input of " + std::to_string(text.size()) + " bytes: '" + std::string(text.substr(0, 40)) + (text.size() > 40 ? "...'" : "'") + ")";
    throw ValueError(msg);
  }

  static Id special(int id, const char* op, const char* piece) {
    if (id < 0)
      throw ValueError(std::string("[Tokenizer::") + op + "] this model has no " + piece +
                       " token (it was trained with its id set to -1; see TrainerOptions)");
    return id;
  }

  std::unique_ptr<sentencepiece::SentencePieceProcessor> sp_;
};

}  // namespace cerberus::tokenizer
