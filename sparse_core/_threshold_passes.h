// The two passes of _threshold_columns.cpp and the exp they use. Included twice there, into
// namespace `generic` and (on x86-64) into namespace `avx2` compiled for AVX2 + FMA, so that every
// function, the inlined exp included, is built for its target. No include guard on purpose.

// exp(x) for x <= 0; inputs below ln(FLT_MIN) give about FLT_MIN instead of a subnormal or 0.
template <typename F, typename I>
inline F exp_nonpositive(F x) {
  const F lowest = F{} - 87.3f;
  x = x < lowest ? lowest : x;
  F scaled = x * 1.44269504088896341f + 0.5f;  // x / ln2, rounded below through the cast
  I n = __builtin_convertvector(scaled, I);   // truncates toward zero
  F fn = __builtin_convertvector(n, F);
  fn = fn > scaled ? fn - 1.0f : fn;         // floor for negative arguments
  n = __builtin_convertvector(fn, I);
  F r = x - fn * 0.693359375f + fn * 2.12194440e-4f;  // x - n ln2, ln2 in two parts
  F p = r * 1.9875691500e-4f + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  p = p * (r * r) + r + 1.0f;
  const I bits = (n + 127) << 23;  // 2^n; n >= -126 after the clamp
  F scale;
  std::memcpy(&scale, &bits, sizeof scale);
  return p * scale;
}

inline float exp_scalar(float x) {
  typedef float f1 __attribute__((vector_size(4)));
  typedef int32_t i1 __attribute__((vector_size(4)));
  f1 v = {x};
  return exp_nonpositive<f1, i1>(v)[0];
}

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
