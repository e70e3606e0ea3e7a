// Evaluation metrics: classification (accuracy, macro-F1, confusion matrix), BLEU, chrF, ROUGE.
// Plain C++ over labels and strings; no tensor code, so it is not part of cerberus.hpp.
// Namespace cerberus::evaluation: cerberus::eval is already the function that evaluates an
// expression (expr/ops.hpp), and a namespace of that name would not compile next to it.
#pragma once

#include "cerberus/eval/bleu.hpp"
#include "cerberus/eval/chrf.hpp"
#include "cerberus/eval/classification.hpp"
#include "cerberus/eval/rouge.hpp"
