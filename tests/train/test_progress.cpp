#include "cerberus/train/progress.hpp"

#include <cstdio>
#include <string>

#include "support/catch.hpp"

using namespace cerberus::train;

TEST_CASE("human_count keeps three significant digits and a unit", "[train][progress]") {
  CHECK(human_count(0) == "0");
  CHECK(human_count(999) == "999");
  CHECK(human_count(1840) == "1.84k");
  CHECK(human_count(12345) == "12.3k");
  CHECK(human_count(123456) == "123k");
  CHECK(human_count(2.5e6) == "2.50M");
}

TEST_CASE("human_duration prints h:mm:ss and refuses unknown times", "[train][progress]") {
  CHECK(human_duration(0) == "0:00:00");
  CHECK(human_duration(239) == "0:03:59");
  CHECK(human_duration(3600 * 2 + 61) == "2:01:01");
  CHECK(human_duration(NAN) == "--:--");
  CHECK(human_duration(-1) == "--:--");
}

TEST_CASE("ProgressBar logs whole lines to a file at the requested interval", "[train][progress]") {
  std::FILE* log = std::tmpfile();
  REQUIRE(log != nullptr);
  ProgressBar bar(10, log, 5);
  for (int step = 1; step <= 10; ++step) bar.update(step, 2.0, 100);
  CHECK(bar.tokens_seen() == 1000);
  std::rewind(log);
  std::string text;
  char buf[512];
  while (std::fgets(buf, sizeof buf, log)) text += buf;
  std::fclose(log);
  // Steps 1, 5 and 10: the first step, the interval, the end.
  std::size_t lines = 0;
  for (char c : text) lines += c == '\n';
  CHECK(lines == 3);
  CHECK(text.find("[" + std::string(20, '#') + "] 10/10") != std::string::npos);
  CHECK(text.find("loss 2.000") != std::string::npos);
  CHECK(text.find("ppl 7.4") != std::string::npos);  // e^2 = 7.39
  CHECK(text.find('\r') == std::string::npos);
}
