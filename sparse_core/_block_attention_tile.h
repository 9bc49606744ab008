// One query tile of _block_attention.cpp. Included twice there, into namespace `generic` and (on
// x86-64) into namespace `avx2` compiled for AVX2 + FMA, so that every function, the inlined
// exp (_vector_exp.h) included, is built for its target. No include guard on purpose.
//
// Layout: the tile's queries are columns. Qᵀ (D × W), the scores Sᵀ (keys × W) and the output
// Oᵀ (D × W) keep W = the tile's query count rounded up to 16 contiguous, so that every step
// runs along vectors of queries and reads keys and values in their own row-major layout:
//   Sᵀ[j, i] = Σ_d K[j, d]·Qᵀ[d, i]      (A = K, rows j, depth d)
//   Oᵀ[e, i] += Σ_j V[j, e]·Sᵀ[j, i]     (A = Vᵀ read through strides, rows e, depth j)
// Both are C (R × 2·kLanes) += A (R × depth) · B (depth × 2·kLanes): a register tile of R rows
// × 2 vectors. The including namespace defines Floats and Ints (vectors of kLanes lanes) and
// kRows.

#include "_vector_exp.h"

// c[r][0..2·kLanes) (+)= Σ_p a[r·a_row + p·a_depth] · b[p·b_depth + 0..2·kLanes), for r < R.
template <int R>
inline void tile(const float* a, int64_t a_row, int64_t a_depth, const float* b, int64_t b_depth,
                 int64_t depth, float* c, int64_t c_row, bool add) {
  Floats acc[R][2];
  for (int r = 0; r < R; ++r) {
    if (add) {
      std::memcpy(&acc[r][0], c + r * c_row, sizeof(Floats));
      std::memcpy(&acc[r][1], c + r * c_row + kLanes, sizeof(Floats));
    } else {
      acc[r][0] = Floats{};
      acc[r][1] = Floats{};
    }
  }
  for (int64_t p = 0; p < depth; ++p) {
    Floats b0, b1;
    std::memcpy(&b0, b + p * b_depth, sizeof b0);
    std::memcpy(&b1, b + p * b_depth + kLanes, sizeof b1);
    for (int r = 0; r < R; ++r) {
      const float x = a[r * a_row + p * a_depth];
      acc[r][0] += x * b0;
      acc[r][1] += x * b1;
    }
  }
  for (int r = 0; r < R; ++r) {
    std::memcpy(c + r * c_row, &acc[r][0], sizeof(Floats));
    std::memcpy(c + r * c_row + kLanes, &acc[r][1], sizeof(Floats));
  }
}

// C (rows × width) (+)= A (rows × depth) · B (depth × width), width a multiple of 2·kLanes:
// register tiles of kRows rows, the last rows % kRows in one narrower tile.
inline void product(const float* a, int64_t a_row, int64_t a_depth, const float* b,
                    int64_t b_depth, int64_t rows, int64_t depth, int64_t width, float* c,
                    int64_t c_row, bool add) {
  for (int64_t i = 0; i < width; i += 2 * kLanes) {
    int64_t r = 0;
    for (; r + kRows <= rows; r += kRows)
      tile<kRows>(a + r * a_row, a_row, a_depth, b + i, b_depth, depth, c + r * c_row + i, c_row,
                  add);
    const float* a_rest = a + r * a_row;
    float* c_rest = c + r * c_row + i;
    switch (rows - r) {
      case 1: tile<1>(a_rest, a_row, a_depth, b + i, b_depth, depth, c_rest, c_row, add); break;
      case 2: tile<2>(a_rest, a_row, a_depth, b + i, b_depth, depth, c_rest, c_row, add); break;
      case 3: tile<3>(a_rest, a_row, a_depth, b + i, b_depth, depth, c_rest, c_row, add); break;
      case 4: tile<4>(a_rest, a_row, a_depth, b + i, b_depth, depth, c_rest, c_row, add); break;
      case 5: tile<5>(a_rest, a_row, a_depth, b + i, b_depth, depth, c_rest, c_row, add); break;
      default: break;
    }
  }
}

// Scores of query i (position `position` + i) and key j (position `start` + j) with
// |(position + i) - (start + j)| > half set to -inf, for the `rows` keys of one block, when some
// pair of the block lies outside the band.
inline void mask_band(float* scores, int64_t rows, int64_t width, int64_t count, int64_t start,
                      int64_t position, int64_t half) {
  const int64_t last_query = position + count - 1, last_key = start + rows - 1;
  if (last_query - start <= half && last_key - position <= half) return;  // all inside
  for (int64_t j = 0; j < rows; ++j) {
    // allowed queries i: position + i in [start + j - half, start + j + half]
    const int64_t low = std::clamp<int64_t>(start + j - half - position, 0, width);
    const int64_t high = std::clamp<int64_t>(start + j + half - position + 1, low, width);
    float* row = scores + j * width;
    std::fill(row, row + low, kNegInf);
    std::fill(row + high, row + width, kNegInf);
  }
}

// Attention of one query tile over its listed key blocks, with the running maximum and sum of
// the online softmax (FlashAttention's recurrence) across chunks of at most kChunkKeys keys.
//   q: the tile's first query row, rows q_row floats apart; count: its rows (<= kTileRows)
//   keys, values: each listed key block's first row, rows k_row (v_row) floats apart;
//     lengths: each block's rows (`size`, or fewer for the block a sequence ends in)
//   band: half < 0 for every pair; else only pairs with |query - key| <= half count, where
//     the tile's first query is at `position` and block b's first key at starts[b] (every query
//     must keep at least one key)
//   out: where the tile's first output row goes, rows out_row floats apart
//   lse: null, or where the tile's first row's log-sum-exp of its scaled scores goes (count
//     consecutive floats)
//   work: 2·D·W + 2·W + (max(kChunkKeys, longest block) + 3)·W floats of scratch, W = count
//   rounded up to 16
void attend_tile(const float* q, int64_t q_row, int64_t count, const float* const* keys,
                 const float* const* values, const int64_t* lengths, int64_t blocks,
                 int64_t size, int64_t k_row, int64_t v_row, int64_t dim, float scale,
                 int64_t half, int64_t position, const int64_t* starts, float* out,
                 int64_t out_row, float* lse, float* work) {
  const int64_t width = (count + 15) / 16 * 16;
  float* qt = work;                       // D × W
  float* ot = qt + dim * width;           // D × W
  float* run_max = ot + dim * width;      // W
  float* run_sum = run_max + width;       // W
  float* scores = run_sum + width;        // a chunk's keys × W, then three rows
  for (int64_t d = 0; d < dim; ++d)
    for (int64_t i = 0; i < width; ++i)
      qt[d * width + i] = i < count ? q[i * q_row + d] * scale : 0;
  std::fill(ot, ot + dim * width, 0.0f);
  std::fill(run_max, run_max + width, kNegInf);
  std::fill(run_sum, run_sum + width, 0.0f);
  const int64_t per_chunk = std::max<int64_t>(1, kChunkKeys / size);
  for (int64_t first = 0; first < blocks; first += per_chunk) {
    const int64_t chunk = std::min(per_chunk, blocks - first);
    int64_t rows = 0;  // the chunk's keys, its blocks' scores one after another
    for (int64_t b = first; b < first + chunk; ++b) {
      product(keys[b], k_row, 1, qt, width, lengths[b], dim, width, scores + rows * width,
              width, false);
      if (half >= 0)
        mask_band(scores + rows * width, lengths[b], width, count, starts[b], position, half);
      rows += lengths[b];
    }
    // The chunk's column maxima, then the new weights and their sums, and the rescale of what
    // came before: each pass along whole rows of the scores (down a column, every load would
    // touch a new cache line).
    float* top = scores + rows * width;  // W: the new running maxima
    std::copy(run_max, run_max + width, top);
    for (int64_t j = 0; j < rows; ++j) {
      for (int64_t i = 0; i < width; i += kLanes) {
        Floats s, m;
        std::memcpy(&s, scores + j * width + i, sizeof s);
        std::memcpy(&m, top + i, sizeof m);
        m = s > m ? s : m;
        std::memcpy(top + i, &m, sizeof m);
      }
    }
    // Weights are exp(s - shift), shift = the maximum, or 0 for a column whose scores so far are
    // all -inf (overflowed products): exp(-inf - -inf) would be NaN, and stay in the sums.
    float* shift = top + width;  // W
    for (int64_t i = 0; i < width; i += kLanes) {
      Floats m;
      std::memcpy(&m, top + i, sizeof m);
      m = m == kNegInf ? Floats{} : m;
      std::memcpy(shift + i, &m, sizeof m);
    }
    float* total = shift + width;  // W: this chunk's sums
    std::fill(total, total + width, 0.0f);
    for (int64_t j = 0; j < rows; ++j) {
      for (int64_t i = 0; i < width; i += kLanes) {
        Floats s, m, sum;
        std::memcpy(&s, scores + j * width + i, sizeof s);
        std::memcpy(&m, shift + i, sizeof m);
        std::memcpy(&sum, total + i, sizeof sum);
        s = exp_nonpositive<Floats, Ints>(s - m);
        std::memcpy(scores + j * width + i, &s, sizeof s);
        sum += s;
        std::memcpy(total + i, &sum, sizeof sum);
      }
    }
    for (int64_t i = 0; i < width; i += kLanes) {
      Floats old, m, top_now, sum, sums;
      std::memcpy(&old, run_max + i, sizeof old);
      std::memcpy(&m, shift + i, sizeof m);
      std::memcpy(&top_now, top + i, sizeof top_now);
      std::memcpy(&sum, total + i, sizeof sum);
      std::memcpy(&sums, run_sum + i, sizeof sums);
      // nothing before (the first chunk, or only -inf scores so far): what came before is zeroed
      const Floats rescale = old == kNegInf ? Floats{} : exp_nonpositive<Floats, Ints>(old - m);
      sums = sums * rescale + sum;
      std::memcpy(run_sum + i, &sums, sizeof sums);
      std::memcpy(run_max + i, &top_now, sizeof top_now);
      if (first > 0) {
        for (int64_t d = 0; d < dim; ++d) {
          Floats o;
          std::memcpy(&o, ot + d * width + i, sizeof o);
          o *= rescale;
          std::memcpy(ot + d * width + i, &o, sizeof o);
        }
      }
    }
    rows = 0;
    for (int64_t b = first; b < first + chunk; ++b) {
      product(values[b], 1, v_row, scores + rows * width, width, dim, lengths[b], width, ot,
              width, true);
      rows += lengths[b];
    }
  }
  for (int64_t i = 0; i < count; ++i) {
    const float inverse = 1.0f / run_sum[i];
    for (int64_t d = 0; d < dim; ++d) out[i * out_row + d] = ot[d * width + i] * inverse;
  }
  if (lse)  // run_sum is Σ exp(s - run_max)
    for (int64_t i = 0; i < count; ++i) lse[i] = run_max[i] + std::log(run_sum[i]);
}
