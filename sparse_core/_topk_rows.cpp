// Exact top-k of every row of a float32 CPU matrix: torch.ops.longenc.topk_rows(scores, k).
//
// torch.topk spends most of its time per row (a copy and a partial sort of the whole row), which
// dominates top-k attention on CPU. Here one row costs about one vectorised pass over it:
//   1. the max of each 16-score chunk;
//   2. a floor that at least k scores reach, so that every top-k score is >= floor: first the
//      smallest of the maxima of k disjoint runs of chunks, then the k-th largest max among the
//      chunks that reach it;
//   3. the scores >= floor, taken only from chunks whose max reaches it (about k chunks);
//   4. std::nth_element over those few candidates.
// NaN ranks above every number, as in torch.topk. Ties at the k-th value are broken arbitrarily.
// Built on first use by sparse_core/_native.py; sparse_core/_exact_topk.py is the pure-torch
// fallback with the same results.

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <limits>
#include <tuple>
#include <utility>
#include <vector>

namespace {

constexpr int64_t kChunk = 16;
constexpr float kNegInf = -std::numeric_limits<float>::infinity();

typedef float f4 __attribute__((vector_size(16)));  // GCC/Clang vectors: SSE, NEON, ...

inline f4 load4(const float* p) {
  f4 v;
  std::memcpy(&v, p, sizeof v);
  return v;
}

typedef int32_t i4 __attribute__((vector_size(16)));

// The order of the scores. Plain: IEEE >. WithNaN: NaN above every number and equal to NaN (as
// torch.topk ranks it), a strict weak order too, but slower; used only for rows holding a NaN.
struct Plain {
  static bool above(float a, float b) { return a > b; }
  static f4 larger4(f4 a, f4 b) { return b > a ? b : a; }
};
struct WithNaN {
  static bool above(float a, float b) { return a > b || (a != a && b == b); }
  static f4 larger4(f4 a, f4 b) { return (b > a) | (b != b) ? b : a; }
};

struct Scratch {
  std::vector<float> chunk_max;  // per chunk
  std::vector<int32_t> live;     // chunks that may hold a top-k score
  std::vector<float> live_max;   // their maxima
  std::vector<std::pair<float, int64_t>> candidates;
};

// Fills w.chunk_max; returns whether the row holds a NaN (Plain's maxima then skip it).
template <class Order>
bool chunk_maxima(const float* s, int64_t n, Scratch& w) {
  const auto larger = [](float a, float b) { return Order::above(b, a) ? b : a; };
  const int64_t full = n / kChunk;
  const int64_t chunks = (n + kChunk - 1) / kChunk;  // the last one may be partial
  w.chunk_max.resize(chunks);
  i4 nan = {0, 0, 0, 0};
  for (int64_t c = 0; c < full; ++c) {
    const float* p = s + c * kChunk;
    const f4 a = load4(p), b = load4(p + 4), d = load4(p + 8), e = load4(p + 12);
    nan |= (a != a) | (b != b) | (d != d) | (e != e);
    const f4 m = Order::larger4(Order::larger4(a, b), Order::larger4(d, e));
    w.chunk_max[c] = larger(larger(m[0], m[1]), larger(m[2], m[3]));
  }
  bool has_nan = nan[0] | nan[1] | nan[2] | nan[3];
  if (full < chunks) {
    float m = kNegInf;
    for (int64_t j = full * kChunk; j < n; ++j) {
      m = larger(m, s[j]);
      has_nan |= s[j] != s[j];
    }
    w.chunk_max[full] = m;
  }
  return has_nan;
}

template <class Order>
void select_row(const float* s, int64_t n, int64_t k, Scratch& w, float* out_values,
                int64_t* out_indices) {
  const auto above = Order::above;
  const auto larger = [](float a, float b) { return Order::above(b, a) ? b : a; };
  const int64_t chunks = static_cast<int64_t>(w.chunk_max.size());

  w.live.resize(chunks);
  float floor = kNegInf;  // fewer chunks than k: every score is a candidate
  int64_t live = chunks;
  if (chunks >= k) {
    // k disjoint runs of chunks each hold their max, so k scores reach the smallest of them.
    const int64_t run = chunks / k;
    floor = std::numeric_limits<float>::infinity();
    for (int64_t r = 0; r < k; ++r) {
      const int64_t stop = r == k - 1 ? chunks : (r + 1) * run;
      float m = kNegInf;
      for (int64_t c = r * run; c < stop; ++c) m = larger(m, w.chunk_max[c]);
      floor = above(floor, m) ? m : floor;
    }
    // Keep the chunks that reach it (branch-free), then raise the floor to the k-th largest of
    // their maxima: k chunks still reach it.
    w.live_max.resize(chunks);
    live = 0;
    for (int64_t c = 0; c < chunks; ++c) {
      w.live[live] = static_cast<int32_t>(c);
      w.live_max[live] = w.chunk_max[c];
      live += !above(floor, w.chunk_max[c]);
    }
    std::nth_element(w.live_max.begin(), w.live_max.begin() + (k - 1),
                     w.live_max.begin() + live, above);
    floor = w.live_max[k - 1];
  } else {
    for (int64_t c = 0; c < chunks; ++c) w.live[c] = static_cast<int32_t>(c);
  }

  if (static_cast<int64_t>(w.candidates.size()) < n) w.candidates.resize(n);
  int64_t count = 0;
  for (int64_t i = 0; i < live; ++i) {
    const int64_t c = w.live[i];
    if (above(floor, w.chunk_max[c])) continue;
    const int64_t stop = std::min(n, (c + 1) * kChunk);
    for (int64_t j = c * kChunk; j < stop; ++j) {  // branch-free: write, then keep or overwrite
      w.candidates[count] = {s[j], j};
      count += !above(floor, s[j]);
    }
  }
  const auto by_score = [](const std::pair<float, int64_t>& a,
                           const std::pair<float, int64_t>& b) {
    return Order::above(a.first, b.first);
  };
  std::nth_element(w.candidates.begin(), w.candidates.begin() + (k - 1),
                   w.candidates.begin() + count, by_score);
  for (int64_t t = 0; t < k; ++t) {
    out_values[t] = w.candidates[t].first;
    out_indices[t] = w.candidates[t].second;
  }
}

void topk_row(const float* s, int64_t n, int64_t k, Scratch& w, float* out_values,
              int64_t* out_indices) {
  if (!chunk_maxima<Plain>(s, n, w)) {
    select_row<Plain>(s, n, k, w, out_values, out_indices);
  } else {
    chunk_maxima<WithNaN>(s, n, w);
    select_row<WithNaN>(s, n, k, w, out_values, out_indices);
  }
}

std::tuple<at::Tensor, at::Tensor> topk_rows(const at::Tensor& scores, int64_t k) {
  TORCH_CHECK(scores.dim() == 2, "topk_rows: scores must be 2-D (rows, n)");
  TORCH_CHECK(scores.scalar_type() == at::kFloat, "topk_rows: scores must be float32");
  const int64_t rows = scores.size(0), n = scores.size(1);
  TORCH_CHECK(k >= 1 && k <= n, "topk_rows: need 1 <= k <= n, got k=", k, ", n=", n);
  const at::Tensor dense = scores.contiguous();
  at::Tensor values = at::empty({rows, k}, dense.options());
  at::Tensor indices = at::empty({rows, k}, dense.options().dtype(at::kLong));
  const float* src = dense.const_data_ptr<float>();
  float* out_values = values.mutable_data_ptr<float>();
  int64_t* out_indices = indices.mutable_data_ptr<int64_t>();
  at::parallel_for(0, rows, 1, [&](int64_t begin, int64_t end) {
    Scratch w;
    for (int64_t r = begin; r < end; ++r)
      topk_row(src + r * n, n, k, w, out_values + r * k, out_indices + r * k);
  });
  return {values, indices};
}

}  // namespace

TORCH_LIBRARY(longenc, m) {
  m.def("topk_rows(Tensor scores, int k) -> (Tensor values, Tensor indices)");
}

TORCH_LIBRARY_IMPL(longenc, CPU, m) { m.impl("topk_rows", &topk_rows); }
