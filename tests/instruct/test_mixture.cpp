// instruct/mixture.hpp: the rate formulas exactly (cap, temperature, equal, explicit, mixtures of
// mixtures), draw frequencies against the rates (chi-square bound, fixed seed), per-epoch
// shuffled visiting of every example, and a resume from saved metadata mid-epoch reproducing the
// uninterrupted sequence.
#include <algorithm>
#include <cmath>
#include <map>
#include <set>
#include <string>
#include <vector>

#include "cerberus/instruct/mixture.hpp"
#include "support/catch.hpp"
#include "support/message.hpp"

using namespace cerberus;
using namespace cerberus::instruct;
using cerberus::testing_support::message_of;

namespace {
const std::vector<TaskSource> three{{"translate", 0, 100}, {"summarize", 1, 1000}, {"sentiment", 2, 50000}};

std::vector<double> rates(const Mixture& m) {
  std::vector<double> r;
  for (const auto& l : m.leaf_rates()) r.push_back(l.rate);
  return r;
}

// Pearson's chi-square statistic of `draws` draws against the leaf rates.
double chi_square(const Mixture& m, std::uint64_t seed, int draws) {
  MixtureSampler s(m, seed);
  std::vector<double> count(s.leaves().size(), 0);
  for (int i = 0; i < draws; ++i) count[s.next().leaf] += 1;
  double chi = 0;
  for (std::size_t k = 0; k < count.size(); ++k) {
    const double e = draws * s.leaves()[k].rate;
    chi += (count[k] - e) * (count[k] - e) / e;
  }
  return chi;
}
}  // namespace

TEST_CASE("examples_proportional: rate_i = min(n_i, maximum), normalised") {
  const auto r = rates(examples_proportional(three, 5000));
  REQUIRE(r.size() == 3);
  CHECK(r[0] == Approx(100.0 / 6100).epsilon(1e-14));
  CHECK(r[1] == Approx(1000.0 / 6100).epsilon(1e-14));
  CHECK(r[2] == Approx(5000.0 / 6100).epsilon(1e-14));
  const auto u = rates(examples_proportional(three));  // no cap
  CHECK(u[2] == Approx(50000.0 / 51100).epsilon(1e-14));
  CHECK(message_of([] { examples_proportional(three, 0); }) == "[instruct::examples_proportional] maximum must be > 0, got 0");
}

TEST_CASE("temperature: rate_i = min(n_i, maximum)^(1/T); T = 1 is proportional") {
  const std::vector<TaskSource> t{{"a", 0, 100}, {"b", 1, 400}, {"c", 2, 10000}};
  const auto r = rates(temperature(t, 2.0));
  CHECK(r[0] == Approx(10.0 / 130).epsilon(1e-14));
  CHECK(r[1] == Approx(20.0 / 130).epsilon(1e-14));
  CHECK(r[2] == Approx(100.0 / 130).epsilon(1e-14));
  const auto capped = rates(temperature(t, 2.0, 2500));  // sqrt(2500) = 50
  CHECK(capped[2] == Approx(50.0 / 80).epsilon(1e-14));
  const auto one = rates(temperature(t, 1.0));
  const auto prop = rates(examples_proportional(t));
  for (std::size_t k = 0; k < 3; ++k) CHECK(one[k] == Approx(prop[k]).epsilon(1e-14));
  const auto hot = rates(temperature(t, 1e6));  // towards equal
  for (double x : hot) CHECK(x == Approx(1.0 / 3).epsilon(1e-4));
  CHECK(message_of([&] { temperature(t, 0.0); }) == "[instruct::temperature] temperature must be finite and > 0, got 0.000000");
}

TEST_CASE("equal and explicit rates; errors for negative rates, empty tasks and empty mixtures") {
  for (double x : rates(equal(three))) CHECK(x == Approx(1.0 / 3).epsilon(1e-15));
  Mixture m("explicit");
  m.add(three[0], 1).add(three[1], 3);
  CHECK(rates(m) == std::vector<double>{0.25, 0.75});
  CHECK(message_of([&] { m.add(three[2], -1); }) == "[instruct::Mixture] explicit: rate of 'sentiment' must be finite and >= 0, got -1.000000");
  CHECK(message_of([&] { m.add(TaskSource{"empty", 3, 0}, 1); }) ==
        "[instruct::Mixture] explicit: task 'empty' has 0 examples; a mixed task needs at least one");
  CHECK(message_of([] { Mixture("none").leaf_rates(); }) == "[instruct::Mixture] none: no members");
  Mixture zero("zero");
  zero.add(three[0], 0);
  CHECK(message_of([&] { zero.leaf_rates(); }) == "[instruct::Mixture] zero: every rate is 0");
}

TEST_CASE("a mixture of mixtures splits a member's rate by its own rates") {
  const Mixture inner = examples_proportional({{"a", 0, 100}, {"b", 1, 300}}, no_maximum, "inner");
  Mixture outer("outer");
  outer.add(inner, 1.0).add(TaskSource{"c", 2, 7}, 3.0);
  const auto l = outer.leaf_rates();
  REQUIRE(l.size() == 3);
  CHECK(l[0].task.name == "a");
  CHECK(l[0].rate == Approx(0.0625).epsilon(1e-15));
  CHECK(l[1].rate == Approx(0.1875).epsilon(1e-15));
  CHECK(l[2].rate == Approx(0.75).epsilon(1e-15));
  // Two levels deep, and a task reached twice gets the sum of its shares.
  Mixture top("top");
  top.add(outer, 1.0).add(TaskSource{"c", 2, 7}, 1.0);
  const auto t = top.leaf_rates();
  REQUIRE(t.size() == 3);
  CHECK(t[2].rate == Approx(0.5 * 0.75 + 0.5).epsilon(1e-15));
  CHECK(t[0].rate == Approx(0.5 * 0.0625).epsilon(1e-15));
  Mixture clash("clash");
  clash.add(outer, 1.0).add(TaskSource{"c", 2, 8}, 1.0);
  CHECK(message_of([&] { clash.leaf_rates(); }) == "[instruct::Mixture] clash: task 'c' appears twice with different ids or sizes");
  // Draws follow the flattened rates.
  CHECK(chi_square(top, 11, 40000) < 16.3);  // df = 2: p ~ 3e-4
}

TEST_CASE("draw frequencies match the rates (chi-square, 60 000 draws, fixed seeds)") {
  // df = 2; 13.8 is the 0.1 % point. A broken sampler (e.g. off-by-one in the cumulative search,
  // or equal sampling) gives values in the thousands.
  CHECK(chi_square(examples_proportional(three, 5000), 1, 60000) < 13.8);
  CHECK(chi_square(temperature(three, 3.0), 2, 60000) < 13.8);
  CHECK(chi_square(equal(three), 3, 60000) < 13.8);
  // The statistic does detect a wrong rate: equal draws scored against proportional rates.
  const Mixture prop = examples_proportional(three, 5000);
  MixtureSampler eq(equal(three), 4);
  std::vector<double> c(3, 0);
  for (int i = 0; i < 60000; ++i) c[eq.next().leaf] += 1;
  double chi = 0;
  const auto r = rates(prop);
  for (int k = 0; k < 3; ++k) chi += (c[k] - 60000 * r[k]) * (c[k] - 60000 * r[k]) / (60000 * r[k]);
  CHECK(chi > 1000);
}

TEST_CASE("each task's examples are visited in a shuffled order, every one once per epoch, reshuffled per epoch") {
  const Mixture m = equal({{"a", 0, 50}, {"b", 1, 30}});
  MixtureSampler s(m, 7);
  std::map<std::size_t, std::vector<std::int64_t>> seen;
  std::map<std::size_t, std::vector<std::int64_t>> epochs;
  while (seen[0].size() < 100 || seen[1].size() < 60) {
    const Draw d = s.next();
    seen[d.leaf].push_back(d.example);
    epochs[d.leaf].push_back(d.epoch);
    CHECK(d.task_id == static_cast<std::int64_t>(d.leaf));
  }
  for (std::size_t k = 0; k < 2; ++k) {
    const std::size_t n = k == 0 ? 50 : 30;
    std::vector<std::int64_t> e0(seen[k].begin(), seen[k].begin() + static_cast<long>(n));
    std::vector<std::int64_t> e1(seen[k].begin() + static_cast<long>(n), seen[k].begin() + static_cast<long>(2 * n));
    CHECK(epochs[k][0] == 0);
    CHECK(epochs[k][n] == 1);
    std::vector<std::int64_t> sorted0 = e0, sorted1 = e1;
    std::sort(sorted0.begin(), sorted0.end());
    std::sort(sorted1.begin(), sorted1.end());
    std::vector<std::int64_t> iota(n);
    for (std::size_t i = 0; i < n; ++i) iota[i] = static_cast<std::int64_t>(i);
    CHECK(sorted0 == iota);  // every example exactly once per epoch
    CHECK(sorted1 == iota);
    CHECK(e0 != iota);  // shuffled
    CHECK(e0 != e1);    // reshuffled
  }
}

TEST_CASE("same seed, same sequence; another seed, another") {
  const Mixture m = temperature(three, 2.0);
  MixtureSampler a(m, 5), b(m, 5), c(m, 6);
  int same = 0;
  for (int i = 0; i < 200; ++i) {
    const Draw x = a.next(), y = b.next(), z = c.next();
    CHECK((x.leaf == y.leaf && x.example == y.example));
    same += (x.leaf == z.leaf && x.example == z.example);
  }
  CHECK(same < 100);
}

TEST_CASE("resume mid-epoch from saved metadata reproduces the uninterrupted sequence") {
  Mixture m("nested");  // a mixture of mixtures, so the flattening is part of what is resumed
  m.add(examples_proportional({{"a", 0, 13}, {"b", 1, 40}}, 30, "ab"), 2.0).add(TaskSource{"c", 2, 7}, 1.0);
  MixtureSampler full(m, 99);
  std::vector<std::pair<std::size_t, std::int64_t>> expected;
  for (int i = 0; i < 400; ++i) {
    const Draw d = full.next();
    expected.push_back({d.leaf, d.example});
  }
  MixtureSampler first(m, 99);
  for (int i = 0; i < 157; ++i) first.next();
  std::map<std::string, std::string> meta{{"step", "157"}};
  first.save_state(meta, "mix.");
  CHECK(meta.at("mix.tasks") == "a,b,c");
  CHECK(meta.at("mix.seed") == "99");
  CHECK(first.state().cursor != std::vector<std::int64_t>{0, 0, 0});  // mid-epoch
  MixtureSampler resumed(m, 12345);  // the seed comes from the metadata
  resumed.restore_state(meta, "mix.");
  CHECK(resumed.state() == first.state());
  for (int i = 157; i < 400; ++i) {
    const Draw d = resumed.next();
    CHECK(d.leaf == expected[static_cast<std::size_t>(i)].first);
    CHECK(d.example == expected[static_cast<std::size_t>(i)].second);
  }
  // Mismatched or damaged metadata is refused, naming the field.
  MixtureSampler other(equal({{"a", 0, 13}, {"b", 1, 40}}), 1);
  CHECK(message_of([&] { other.restore_state(meta, "mix."); }) ==
        "[instruct::MixtureSampler::restore_state] field 'mix.tasks' is \"a,b,c\", this mixture's tasks are \"a,b\"");
  auto broken = meta;
  broken["mix.offset"] = "12x";
  CHECK(message_of([&] { resumed.restore_state(broken, "mix."); }) ==
        "[instruct::MixtureSampler::restore_state] field 'mix.offset': expected a non-negative decimal integer, found \"12x\"");
  broken = meta;
  broken["mix.seed"] = "-1";
  CHECK(message_of([&] { resumed.restore_state(broken, "mix."); }) ==
        "[instruct::MixtureSampler::restore_state] field 'mix.seed': expected a non-negative decimal integer, found \"-1\"");
  broken["mix.seed"] = "99999999999999999999999";  // overflows 64 bits
  CHECK(message_of([&] { resumed.restore_state(broken, "mix."); }) ==
        "[instruct::MixtureSampler::restore_state] field 'mix.seed': expected a non-negative decimal integer, found \"99999999999999999999999\"");
  broken = meta;
  broken.erase("mix.cursor.b");
  CHECK(message_of([&] { resumed.restore_state(broken, "mix."); }) ==
        "[instruct::MixtureSampler::restore_state] metadata has no field 'mix.cursor.b'");
  broken = meta;
  broken["mix.cursor.c"] = "7";
  CHECK(message_of([&] { resumed.restore_state(broken, "mix."); }) ==
        "[instruct::MixtureSampler] state: task 'c' cursor 7 outside [0, 7) or negative epoch");
}

TEST_CASE("pick_template: deterministic per (task, example, epoch), uniform over the templates") {
  std::vector<int> count(4, 0);
  int changed = 0;
  for (std::int64_t e = 0; e < 2000; ++e) {
    const Draw d{0, 1, e, 0};
    const std::size_t t = pick_template(d, 4, 3);
    REQUIRE(t < 4);
    CHECK(t == pick_template(d, 4, 3));
    count[t] += 1;
    changed += t != pick_template(Draw{0, 1, e, 1}, 4, 3);  // next epoch
  }
  for (int c : count) CHECK(std::abs(c - 500) < 90);  // ~4.4 sigma
  CHECK(changed > 1200);  // 3/4 expected to differ
  CHECK(message_of([] { pick_template(Draw{}, 0); }) == "[instruct::pick_template] a task needs at least one template");
}
