// The tokenizer component in one include: Tokenizer (encode / decode a SentencePiece model) and
// train(). Link cerberus::tokenizer (it brings SentencePiece's runtime and trainer libraries).
// Deliberately not part of <cerberus/cerberus.hpp>: core users never need SentencePiece.
#pragma once

#include "cerberus/tokenizer/tokenizer.hpp"
#include "cerberus/tokenizer/trainer.hpp"
