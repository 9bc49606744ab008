// The two passes of _threshold_columns.cpp. Included twice there, into namespace `generic` and
// (on x86-64) into namespace `avx2` compiled for AVX2 + FMA, so that every function, the inlined
// exp (_vector_exp.h) included, is built for its target. No include guard on purpose.

#include "_vector_exp.h"

// Column maxima of rows [first, stop) into max (c floats, -inf on entry).
void column_max(const float* s, int64_t first, int64_t stop, int64_t c, float* max) {
  for (int64_t r = first; r < stop; ++r) {
    const float* row = s + r * c;
    int64_t j = 0;
    for (; j + kWidth <= c; j += kWidth) {
      f8 x, m;
      std::memcpy(&x, row + j, sizeof x);
      std::memcpy(&m, max + j, sizeof m);
      m = x > m ? x : m;
      std::memcpy(max + j, &m, sizeof m);
    }
    for (; j < c; ++j) max[j] = row[j] > max[j] ? row[j] : max[j];
  }
}

// Weights of rows [first, stop) in place; their column sums added into sum.
void column_weights(float* s, int64_t first, int64_t stop, int64_t c,
                    const float* shift, float log_cut, float* sum) {
  for (int64_t r = first; r < stop; ++r) {
    float* row = s + r * c;
    int64_t j = 0;
    for (; j + kWidth <= c; j += kWidth) {
      f8 x, m, total;
      std::memcpy(&x, row + j, sizeof x);
      std::memcpy(&m, shift + j, sizeof m);
      std::memcpy(&total, sum + j, sizeof total);
      x -= m;
      const f8 w = exp_nonpositive<f8, i8>(x);
      const f8 kept = x >= log_cut ? w : f8{};
      std::memcpy(row + j, &kept, sizeof kept);
      total += kept;
      std::memcpy(sum + j, &total, sizeof total);
    }
    for (; j < c; ++j) {
      const float x = row[j] - shift[j];
      row[j] = x >= log_cut ? exp_scalar(x) : 0.0f;
      sum[j] += row[j];
    }
  }
}
