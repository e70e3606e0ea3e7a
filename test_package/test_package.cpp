// Smallest real use of the package: a fused broadcast expression, checked element by element.
#include <cerberus/cerberus.hpp>

#if defined(CERBERUS_TEST_TOKENIZER)
#include <sentencepiece_processor.h>
#endif

#include <cstdio>

int main() {
  using namespace cerberus;
  const Tensor<float> a = arange<float>(6).reshape({2, 3});
  const Tensor<float> b = from_vector<float>({1.0f, 2.0f, 3.0f});
  const Tensor<float> y = a * 2.0f + b;  // y[r][j] = 2 * (3r + j) + j + 1
  for (Index r = 0; r < 2; ++r)
    for (Index j = 0; j < 3; ++j)
      if (y(r, j) != static_cast<float>(2 * (3 * r + j) + j + 1)) {
        std::fprintf(stderr, "test_package: y(%lld, %lld) = %g\n", static_cast<long long>(r), static_cast<long long>(j),
                     static_cast<double>(y(r, j)));
        return 1;
      }
#if defined(CERBERUS_TEST_TOKENIZER)
  sentencepiece::SentencePieceProcessor sp;
  if (sp.Load("no-such-model.model").ok()) return 1;  // links libsentencepiece; the load must fail
#endif
  std::printf("cerberus %d.%d.%d test_package: ok\n", CERBERUS_VERSION_MAJOR, CERBERUS_VERSION_MINOR, CERBERUS_VERSION_PATCH);
  return 0;
}
