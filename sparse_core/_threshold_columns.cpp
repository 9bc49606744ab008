// Threshold weights of score columns, in place:
// torch.ops.longenc.threshold_columns_(scores (G, n, c), log_cut) -> column sums (G, c).
//
// scores[g] holds the scores of c queries (columns) against n keys (rows): the layout the GEMM
// keys @ queriesᵀ writes, which runs several times faster on CPU than queries @ keysᵀ when the
// queries are a short chunk (its small operand is the one packed). For each column: m = its max;
// then s <- exp(s - m) where s - m >= log_cut, else 0; returns each column's sum of weights. Two
// passes over the scores (the maxima, then the weights and their sums), both along contiguous
// rows, where the torch path takes five.
//
// exp is a degree-6 polynomial on [-ln2/2, ln2/2] times 2^n (the classic Cephes expf scheme:
// relative error about 2e-7 here), written over 8-wide GCC vectors so that it runs as AVX2 where
// the CPU has it (checked at run time) and as two 4-wide halves (SSE, NEON) elsewhere.
// Built on first use by sparse_core/_native.py with _topk_rows.cpp into one library.

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <vector>

namespace {

typedef float f8 __attribute__((vector_size(32)));
typedef int32_t i8 __attribute__((vector_size(32)));
constexpr int64_t kWidth = 8;
constexpr int64_t kTaskRows = 512;  // rows (keys) per parallel task
constexpr float kNegInf = -std::numeric_limits<float>::infinity();

namespace generic {
#include "_threshold_passes.h"
}  // namespace generic

#if defined(__x86_64__) && defined(__GNUC__)
#pragma GCC push_options
#pragma GCC target("avx2,fma")
namespace avx2 {
#include "_threshold_passes.h"
}  // namespace avx2
#pragma GCC pop_options
#endif

struct Passes {
  void (*max)(const float*, int64_t, int64_t, int64_t, float*);
  void (*weights)(float*, int64_t, int64_t, int64_t, const float*, float, float*);
};

Passes pick_passes() {
#if defined(__x86_64__) && defined(__GNUC__)
  __builtin_cpu_init();
  if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma"))
    return {avx2::column_max, avx2::column_weights};
#endif
  return {generic::column_max, generic::column_weights};
}

at::Tensor threshold_columns_(at::Tensor& scores, double log_cut, bool portable) {
  TORCH_CHECK(scores.dim() == 3, "threshold_columns_: scores must be 3-D (groups, n, c)");
  TORCH_CHECK(scores.scalar_type() == at::kFloat, "threshold_columns_: scores must be float32");
  TORCH_CHECK(scores.is_contiguous(), "threshold_columns_: scores must be contiguous");
  TORCH_CHECK(log_cut <= 0.0, "threshold_columns_: log_cut must be <= 0, got ", log_cut);
  static const Passes best = pick_passes();
  const Passes passes = portable ? Passes{generic::column_max, generic::column_weights} : best;
  const int64_t groups = scores.size(0), n = scores.size(1), c = scores.size(2);
  at::Tensor sums = at::zeros({groups, c}, scores.options());
  if (n == 0 || c == 0) return sums;
  // Tasks are (group, run of kTaskRows rows); each keeps its own c maxima and c sums, which are
  // then combined per group (a few hundred floats).
  const int64_t runs = (n + kTaskRows - 1) / kTaskRows, tasks = groups * runs;
  std::vector<float> part_max(tasks * c, kNegInf), part_sum(tasks * c, 0.0f), shift(groups * c);
  float* base = scores.mutable_data_ptr<float>();
  at::parallel_for(0, tasks, 1, [&](int64_t begin, int64_t end) {
    for (int64_t t = begin; t < end; ++t) {
      const int64_t g = t / runs, first = (t % runs) * kTaskRows;
      passes.max(base + g * n * c, first, std::min(n, first + kTaskRows), c,
                 part_max.data() + t * c);
    }
  });
  for (int64_t g = 0; g < groups; ++g) {
    for (int64_t j = 0; j < c; ++j) {
      float m = kNegInf;
      for (int64_t r = 0; r < runs; ++r) m = std::max(m, part_max[(g * runs + r) * c + j]);
      shift[g * c + j] = std::isfinite(m) ? m : 0.0f;  // a column of -inf: all weights 0
    }
  }
  const float cut = static_cast<float>(log_cut);
  at::parallel_for(0, tasks, 1, [&](int64_t begin, int64_t end) {
    for (int64_t t = begin; t < end; ++t) {
      const int64_t g = t / runs, first = (t % runs) * kTaskRows;
      passes.weights(base + g * n * c, first, std::min(n, first + kTaskRows), c,
                     shift.data() + g * c, cut, part_sum.data() + t * c);
    }
  });
  float* out = sums.mutable_data_ptr<float>();
  for (int64_t t = 0; t < tasks; ++t)
    for (int64_t j = 0; j < c; ++j) out[(t / runs) * c + j] += part_sum[t * c + j];
  return sums;
}

}  // namespace

TORCH_LIBRARY_FRAGMENT(longenc, m) {
  // portable: the generic build even where the AVX2 one runs (so that tests exercise both)
  m.def("threshold_columns_(Tensor(a!) scores, float log_cut, bool portable=False) -> Tensor sums");
}

TORCH_LIBRARY_IMPL(longenc, CPU, m) { m.impl("threshold_columns_", &threshold_columns_); }
