// Metrics against published reference values: scikit-learn's documented examples (accuracy,
// macro-F1, confusion matrix), sacrebleu's own test cases (BLEU, sentence BLEU, chrF) and
// google-research rouge_scorer's tests (ROUGE-1/2/L, values from ROUGE-1.5.5). Each fixture cites
// its source file; tolerances are half a unit of the last printed digit (or the source's EPSILON).
#include <cmath>
#include <cstdint>
#include <string>
#include <vector>

#include "cerberus/eval.hpp"
#include "support/catch.hpp"

using namespace cerberus;
using namespace cerberus::evaluation;

namespace {
bool near(double got, double want, double tol) { return std::abs(got - want) <= tol; }
}  // namespace

TEST_CASE("accuracy, macro-F1 and the confusion matrix match scikit-learn's examples") {
  // sklearn/metrics/_classification.py, f1_score docstring: average='macro' -> 0.26666...
  const std::vector<std::int64_t> y_true{0, 1, 2, 0, 1, 2}, y_pred{0, 2, 1, 0, 0, 1};
  CHECK(near(macro_f1(y_pred, y_true), 0.26666666666666666, 1e-15));
  CHECK(near(accuracy(y_pred, y_true), 2.0 / 6.0, 1e-15));
  const auto per_class = per_class_f1(y_pred, y_true);  // sklearn average=None: [0.8, 0, 0]
  REQUIRE(per_class.size() == 3);
  CHECK(near(per_class[0].second, 0.8, 1e-15));
  CHECK(per_class[1].second == 0.0);
  CHECK(per_class[2].second == 0.0);

  // sklearn/metrics/_classification.py, confusion_matrix docstring.
  const std::vector<std::int64_t> t2{2, 0, 2, 2, 0, 1}, p2{0, 0, 2, 2, 0, 2};
  const auto m = confusion_matrix(p2, t2, 3);
  CHECK(m == std::vector<std::vector<std::int64_t>>{{2, 0, 0}, {0, 0, 1}, {1, 0, 2}});

  // Classes absent from both sides are not averaged: label 7 never occurs, so only 0 and 1 count.
  const std::vector<std::int64_t> t3{0, 0, 1, 1}, p3{0, 1, 1, 1};
  CHECK(near(macro_f1(p3, t3), (2.0 / 3.0 + 0.8) / 2.0, 1e-15));
  // A class only predicted (never referenced) has F1 0 and is averaged (zero_division = 0).
  const std::vector<std::int64_t> p4{0, 0, 1, 2};
  CHECK(near(macro_f1(p4, t3), (1.0 + 2.0 / 3.0 + 0.0) / 3.0, 1e-15));

  CHECK_THROWS_AS(accuracy(std::vector<std::int64_t>{1}, std::vector<std::int64_t>{1, 2}), ValueError);
  CHECK_THROWS_AS(confusion_matrix(std::vector<std::int64_t>{3}, std::vector<std::int64_t>{0}, 3), IndexError);
}

TEST_CASE("13a tokenization splits punctuation as mteval-v13a") {
  CHECK(tokenize_13a("The dog bit the man.") == "The dog bit the man .");
  CHECK(tokenize_13a("It wasn't surprising.") == "It wasn't surprising .");
  CHECK(tokenize_13a("3.5, 1,000 and 10-20 (x)") == "3.5 , 1,000 and 10 - 20 ( x )");
  CHECK(tokenize_13a("a &amp; b&quot;") == "a & b \"");
}

TEST_CASE("corpus BLEU reproduces sacrebleu's test_bleu.py") {
  // mjpost/sacrebleu test/test_bleu.py: the README example (two reference streams), EPSILON 1e-8.
  const std::vector<std::vector<std::string>> refs{
      {"The dog bit the man.", "It was not unexpected.", "The man bit him first."},
      {"The dog had bit the man.", "No one was surprised.", "The man had bitten the dog."}};
  const std::vector<std::string> hyps{"The dog bit the man.", "It wasn't surprising.", "The man had just bitten him."};
  CHECK(near(corpus_bleu(hyps, refs).score, 48.530827, 1e-6));  // printed to 6 decimals
  BleuOptions none;
  none.tokenize = BleuTokenize::none;
  CHECK(near(corpus_bleu(hyps, refs, none).score, 49.1919566, 1e-7));
  BleuOptions no_smoothing;
  no_smoothing.smooth = BleuSmooth::none;
  CHECK(near(corpus_bleu(hyps, refs, no_smoothing).score, 48.530827, 1e-6));
  CHECK(corpus_bleu({"", "", ""}, refs).score == 0.0);  // empty hypotheses are kept, and score 0

  // raw_corpus_bleu(sys, [refs], 0.01): floor smoothing 0.01, no tokenization, effective order.
  BleuOptions raw;
  raw.tokenize = BleuTokenize::none;
  raw.smooth = BleuSmooth::floor;
  raw.smooth_value = 0.01;
  raw.effective_order = true;
  const auto raw_bleu = [&](std::vector<std::string> h, std::vector<std::string> r) { return corpus_bleu(h, {r}, raw).score / 100; };
  // test_bleu.py at commit 2ae1366 expects 0.003799178428257963 here; sacrebleu >= 2.0's
  // compute_bleu returns 0 as soon as no n-gram of any order matches (issue #141, "Early stop if
  // there are no matches"), which we follow, as test_sentence_bleu.py's zero cases require.
  CHECK(raw_bleu({"this is a test", "another test"}, {"ref1", "ref2"}) == 0.0);
  CHECK(near(raw_bleu({"this is a test"}, {"this is a test"}), 1.0, 1e-8));
  CHECK(near(raw_bleu({"this is a fest"}, {"this is a test"}), 0.223606797749979, 1e-8));
  CHECK(near(raw_bleu({"test"}, {"a test"}), 0.3678794411714425, 1e-8));
  CHECK(near(raw_bleu({"a test"}, {"a test"}), 1.0, 1e-8));
  CHECK(near(raw_bleu({"a little test"}, {"a test"}), 0.03218297948685433, 1e-8));

  // test_scoring: compute_bleu([9, 7, 5, 3], [10, 8, 6, 4], 11, 11) -> 0.8375922397.
  const auto s = evaluation::detail::bleu_from_statistics({9, 7, 5, 3}, {10, 8, 6, 4}, 11, 11, BleuOptions{});
  CHECK(near(s.score / 100, 0.8375922397, 1e-10));
}

TEST_CASE("sentence BLEU reproduces sacrebleu's test_sentence_bleu.py") {
  // mjpost/sacrebleu test/test_sentence_bleu.py (example from issue #98), EPSILON 1e-3.
  const std::string ref = "producţia de zahăr brut se exprimă în zahăr alb;";
  const std::string sys = "Producția de zahăr primă va fi exprimată în ceea ce privește zahărul alb;";
  const auto bleu = [&](BleuSmooth m, double value, BleuTokenize t = BleuTokenize::v13a) {
    BleuOptions o;
    o.smooth = m;
    o.smooth_value = value;
    o.tokenize = t;
    return sentence_bleu(sys, {ref}, o).score;
  };
  CHECK(near(bleu(BleuSmooth::exp, -1), 8.493, 1e-3));
  CHECK(bleu(BleuSmooth::none, -1) == 0.0);
  CHECK(near(bleu(BleuSmooth::floor, -1), 4.51688, 1e-3));  // default floor 0.1
  CHECK(near(bleu(BleuSmooth::floor, 0.1), 4.51688, 1e-3));
  CHECK(near(bleu(BleuSmooth::floor, 0.5), 10.10, 1e-2));
  CHECK(near(bleu(BleuSmooth::add_k, -1), 14.882, 1e-3));  // default k = 1
  CHECK(near(bleu(BleuSmooth::add_k, 2), 21.389, 1e-3));
  CHECK(near(bleu(BleuSmooth::exp, -1, BleuTokenize::none), 7.347, 1e-3));
  // Example from issue #141: no unigram match gives 0 under every smoothing.
  for (const BleuSmooth m : {BleuSmooth::exp, BleuSmooth::none, BleuSmooth::floor, BleuSmooth::add_k}) {
    BleuOptions o;
    o.smooth = m;
    CHECK(sentence_bleu("this is a cat", {"okay thanks"}, o).score == 0.0);
  }
}

TEST_CASE("chrF reproduces sacrebleu's test_chrf.py") {
  // mjpost/sacrebleu test/test_chrf.py, EPSILON 1e-4.
  // test_chrf: char_order 6, word_order 0, beta 3, eps_smoothing.
  ChrfOptions beta3;
  beta3.beta = 3;
  const auto chrf3 = [&](std::vector<std::string> h, std::vector<std::string> r, const ChrfOptions& o) { return corpus_chrf(h, {r}, o); };
  CHECK(near(chrf3({"abcdefg"}, {"hijklmnop"}, beta3), 0.0, 1e-4));
  CHECK(near(chrf3({"a"}, {"b"}, beta3), 0.0, 1e-4));
  CHECK(near(chrf3({""}, {"b"}, beta3), 0.0, 1e-4));
  CHECK(near(chrf3({""}, {"reference"}, beta3), 0.0, 1e-4));
  CHECK(near(chrf3({"aa"}, {"ab"}, beta3), 8.3333, 1e-4));
  CHECK(near(chrf3({"a", "b"}, {"a", "c"}, beta3), 8.3333, 1e-4));
  CHECK(near(chrf3({"a"}, {"a"}, beta3), 16.6667, 1e-4));
  CHECK(near(chrf3({"a b c"}, {"a b c"}, beta3), 50.0, 1e-4));
  CHECK(near(chrf3({"a b c"}, {"abc"}, beta3), 50.0, 1e-4));
  CHECK(near(chrf3({" risk assessment must be made of those who are qualified and expertise in the sector - these are the scientists ."},
                   {"risk assessment has to be undertaken by those who are qualified and expert in that area - that is the scientists ."}, beta3),
             63.361730, 1e-4));
  CHECK(near(chrf3({" Die    Beziehung zwischen  Obama und Netanjahu ist nicht gerade  freundlich. "},
                   {"Das Verhältnis zwischen Obama und Netanyahu ist nicht gerade freundschaftlich."}, beta3),
             64.1302698, 1e-4));
  CHECK(near(chrf3({"Niemand hat die Absicht, eine Mauer zu errichten"}, {"Niemand hat die Absicht, eine Mauer zu errichten"}, beta3), 100.0,
             1e-4));

  // test_chrf_eff_order: eps_smoothing = false (sacreBLEU < 2.0 mode).
  ChrfOptions eff = beta3;
  eff.eps_smoothing = false;
  CHECK(near(chrf3({"a"}, {"a"}, eff), 100.0, 1e-4));
  CHECK(near(chrf3({""}, {"reference"}, eff), 0.0, 1e-4));
  CHECK(near(chrf3({"a b c"}, {"a b c"}, eff), 100.0, 1e-4));
  CHECK(near(chrf3({"a b c"}, {"abc"}, eff), 100.0, 1e-4));
  CHECK(near(chrf3({""}, {"c"}, eff), 0.0, 1e-4));
  CHECK(near(chrf3({"a", "b"}, {"a", "c"}, eff), 50.0, 1e-4));
  CHECK(near(chrf3({"aa"}, {"ab"}, eff), 25.0, 1e-4));

  // test_chrf_keep_whitespace.
  ChrfOptions keep = beta3;
  keep.remove_whitespace = false;
  CHECK(near(chrf3({"Die Beziehung zwischen Obama und Netanjahu ist nicht gerade freundlich."},
                   {"Das Verhältnis zwischen Obama und Netanyahu ist nicht gerade freundschaftlich."}, keep),
             67.3481606, 1e-4));
  CHECK(near(chrf3({"risk assessment must be made of those who are qualified and expertise in the sector - these are the scientists ."},
                   {"risk assessment has to be undertaken by those who are qualified and expert in that area - that is the scientists ."}, keep),
             65.2414427, 1e-4));

  // test_chrf_sentence_level: sentence_chrf with the defaults (chrF2) on Czech (multi-byte UTF-8).
  CHECK(near(sentence_chrf("Co nás nejvíc trápí, protože lékaři si vybírají, kdo bude žít a kdo zemře.",
                           {"Nejvíce smutní jsme z toho, že musíme rozhodovat o tom, kdo bude žít a kdo zemře."}),
             39.14078509, 1e-4));
  CHECK(near(sentence_chrf("Nebo prostě nemají vybavení, které by jim pomohlo, uvedli lékaři.",
                           {"A někdy nemáme ani potřebný materiál, abychom jim pomohli, popsali lékaři."}),
             31.22557079, 1e-4));
  CHECK(near(sentence_chrf("Lapali po dechu, jejich životy skončily dřív, než skutečně začaly.",
                           {"Lapali po dechu a pak jejich život skončil - dřív, než skutečně mohl začít, připomněli."}),
             57.15704367, 1e-4));
}

TEST_CASE("chrF++ adds word unigrams and bigrams") {
  ChrfOptions pp;
  pp.word_order = 2;
  CHECK(near(sentence_chrf("the cat sat.", {"the cat sat."}, pp), 100.0, 1e-9));
  // "cat." splits into "cat" and "." (sacrebleu's punctuation rule), so it matches "cat ." fully
  // at the word level; at the character level whitespace is removed, so the two are identical.
  CHECK(near(sentence_chrf("the cat.", {"the cat ."}, pp), 100.0, 1e-9));
  // The same characters split into other words: chrF2 (whitespace removed) cannot tell them apart
  // (orders 1-4 at F = 1, orders 5-6 have no n-grams: eps), chrF++ adds two word orders at 0.
  CHECK(near(sentence_chrf("ab cd", {"a bcd"}), 400.0 / 6, 1e-9));
  CHECK(near(sentence_chrf("ab cd", {"a bcd"}, pp), 50.0, 1e-9));
  // Hand count for chrF++ (beta 2, 8 orders) of "a b" vs "a c": chars "ab"/"ac": order 1 P=R=1/2,
  // orders 2..6 no match or no n-grams; words: unigrams P=R=1/2, bigrams none matched. Orders
  // without a match add sacrebleu's eps (1e-16): F = (0.5 + 0.5) / 8 = 0.125 -> 12.5.
  CHECK(near(sentence_chrf("a b", {"a c"}, pp), 12.5, 1e-9));
}

TEST_CASE("ROUGE reproduces google-research rouge_scorer_test.py") {
  // google-research/google-research rouge/rouge_scorer_test.py; rouge_scorer.score(target,
  // prediction) while ours is rouge(hypothesis, reference).
  const auto r1 = rouge("testing", "testing one two").rouge1;  // testRouge1
  CHECK(near(r1.precision, 1.0, 1e-12));
  CHECK(near(r1.recall, 1.0 / 3, 1e-12));
  CHECK(near(r1.fmeasure, 0.5, 1e-12));
  const auto r2 = rouge("testing one", "testing one two").rouge2;  // testRouge2
  CHECK(near(r2.precision, 1.0, 1e-12));
  CHECK(near(r2.recall, 0.5, 1e-12));
  CHECK(near(r2.fmeasure, 2.0 / 3, 1e-12));
  const auto l = rouge("testing two", "testing one two").rougeL;  // testRougeLNonConsecutive
  CHECK(near(l.precision, 1.0, 1e-12));
  CHECK(near(l.recall, 2.0 / 3, 1e-12));
  CHECK(near(l.fmeasure, 0.8, 1e-12));
  const auto empty = rouge("", "testing one two");  // testRougeEmpty
  CHECK(empty.rouge1.fmeasure == 0.0);
  CHECK(empty.rougeL.precision == 0.0);

  // testRouge1/2/LAgainstRouge155: rouge/testdata/pyrouge_files/{target,prediction}.{0,1}.txt,
  // values from ROUGE-1.5.5 to 5 places.
  const std::string target0 =
      "ZfbCUIUuePaiLVUlCaUXxkpu XPeWing tUHfPMuZ',-Xd Y BrUgVJing M-HV.-DgdDaY.rFDJCRing Ht-LM EKBDXkME,yz'RBr q'wtion wIojNbN wL,b "
      ".a-'XdQggyFl jB-RPP'iyOIcUxer tKM L\n";
  const std::string prediction0 = "rFDJCRtion Ht-LM EKtDXkME,yz'RBr q'wer wrojNbN wL,b .a-'XdQggyFl jB-RPP'iyOIcUxi\n";
  const std::string target1 =
      "KsJdPByEtAor fE-Qg Dpdbring cw-WeFyu vC MoBL Xdn g wkvcEiGvKtion BDFhrpMtion psing sbKao Q m qiing LMmer HqqLFXe,XPY,J XsurkMer ,ed "
      "nB'wH'bWVHjWFEing tQ.saefZwJtKrTlixYpMMsJing UCAPwNHeYVjDing c T BUySKtion gMPfJpwGw p'NvxAoping eu pBwMBKV'I DNxqelhu,PHPxDEq,mtion "
      "SN\n";
  const std::string prediction1 =
      "n cw-WeFyu vC MoBL Xdn g wkvcEiGvKtion BDFhrpMer pstion sbKao Q m qier LMmed HqqLFXe,XPY,J XsurkMeo ,ed nB'wH'bWVHjWFEer "
      "tQ.saefZwJtKrTlixYpMMNJtion UCAPwNHeYVjD\n";
  const auto check = [](const RougeScore& s, double r, double p, double f) {
    CHECK(near(s.recall, r, 5e-6));
    CHECK(near(s.precision, p, 5e-6));
    CHECK(near(s.fmeasure, f, 5e-6));
  };
  const RougeScores s0 = rouge(prediction0, target0), s1 = rouge(prediction1, target1);
  check(s0.rouge1, 0.40741, 0.68750, 0.51163);
  check(s1.rouge1, 0.40476, 0.65385, 0.50000);
  check(s0.rouge2, 0.30769, 0.53333, 0.39024);
  check(s1.rouge2, 0.29268, 0.48000, 0.36364);
  check(s0.rougeL, 0.40741, 0.68750, 0.51163);
  check(s1.rougeL, 0.40476, 0.65385, 0.50000);

  // mean_rouge averages per-sentence scores.
  const RougeScores m = mean_rouge({prediction0, prediction1}, {target0, target1});
  CHECK(near(m.rouge2.fmeasure, (s0.rouge2.fmeasure + s1.rouge2.fmeasure) / 2, 1e-15));
  // alnum drops punctuation and case; whitespace tokenization keeps punctuation attached.
  CHECK(rouge("Hello, World!", "hello world").rouge1.fmeasure == 1.0);
  CHECK(rouge("Hello, World!", "hello world", RougeTokenize::whitespace).rouge1.fmeasure == 0.0);
}
