// exp over GCC vectors, shared by the C++ kernels' passes. Included inside each kernel's
// per-target namespaces (generic, avx2), so that it is compiled for each target: no include
// guard on purpose.

// exp(x) for x <= 0; inputs below ln(FLT_MIN) give about FLT_MIN instead of a subnormal or 0.
template <typename F, typename I>
inline F exp_nonpositive(F x) {
  const F lowest = F{} - 87.3f;
  x = x < lowest ? lowest : x;
  // n = x / ln2 rounded to nearest by the adder: with 1.5·2^23 added, the sum's last mantissa
  // bits hold n (two conversions and a floor's compare-and-fix fewer than a cast)
  const F shifted = x * 1.44269504088896341f + 12582912.0f;
  const F fn = shifted - 12582912.0f;
  I n;
  std::memcpy(&n, &shifted, sizeof n);
  n -= 0x4B400000;  // the bits of 1.5·2^23
  // x - n ln2, in [-ln2/2, ln2/2], with ln2 in two parts
  F r = x - fn * 0.693359375f + fn * 2.12194440e-4f;
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
