// Block-sparse attention without gathering:
// torch.ops.longenc.block_attention_(q, k, v, out, heads, query_blocks, key_blocks, block_size,
//                                    length, scale, portable=False, half_window=-1, lse=None)
// q, k, v, out: float32 (H, n, D) rows of one sequence (any strides between heads and rows, each
// row contiguous; out's n may differ), cut into blocks of block_size rows; only rows < length
// are read or written (block t is rows [t·T, min((t + 1)·T, length))). For every item g and
// head h (every head, or heads[g] when `heads` is not empty) it writes, for the query rows of
// block query_blocks[g],
//   out = softmax(scale · Q Kᵀ) V,  K, V = the key blocks key_blocks[g, 0..c) one after another.
// Every pair of an item is allowed (the executor sends items that need a mask to SDPA), or with
// half_window >= 0 only pairs of rows i, j with |i - j| <= half_window (a sliding window; every
// query row must keep at least one of its listed keys). Each (head, query block) comes at most
// once. With `lse` (float32 (H, >= length), contiguous rows) each written row's log-sum-exp of its
// scaled scores goes there too, for merging with attention over other keys (sparse_core/_lse.py).
//
// Why: torch's CPU SDPA takes its keys as one tensor, so the executor copies every listed block
// into a workspace first (each key block is copied once per query block that lists it), and for
// 64-row queries it runs 32-row tiles. Here each query tile of up to 64 rows reads its listed
// blocks where they lie, in the model's own row layout, and the two products run on register
// tiles over GCC vectors (AVX2 + FMA where the CPU has it, checked at run time; SSE or NEON
// elsewhere), with the softmax's exp from _vector_exp.h. Built on first use by
// sparse_core/_native.py with the other kernels into one library.

#include <ATen/ATen.h>
#include <ATen/MemoryOverlap.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <optional>
#include <vector>

namespace {

constexpr int64_t kTileRows = 64;     // query rows per task
constexpr int64_t kChunkKeys = 512;   // keys per softmax chunk (whole blocks, at least one)
constexpr float kNegInf = -std::numeric_limits<float>::infinity();

// Register tiles of kRows rows × 2 vectors. AVX2: 6 × 16 floats, 12 accumulators of its 16
// registers. Portable: 16-byte vectors (SSE2, NEON), 4 × 8 floats; 32-byte vectors there went
// through the stack for every broadcast, 25× slower.
namespace generic {
typedef float Floats __attribute__((vector_size(16)));
typedef int32_t Ints __attribute__((vector_size(16)));
constexpr int64_t kLanes = 4;
constexpr int kRows = 4;
#include "_block_attention_tile.h"
}  // namespace generic

#if defined(__x86_64__) && defined(__GNUC__)
#pragma GCC push_options
#pragma GCC target("avx2,fma")
namespace avx2 {
typedef float Floats __attribute__((vector_size(32)));
typedef int32_t Ints __attribute__((vector_size(32)));
constexpr int64_t kLanes = 8;
constexpr int kRows = 6;
#include "_block_attention_tile.h"
}  // namespace avx2
#pragma GCC pop_options
#endif

using TileFn = decltype(&generic::attend_tile);

TileFn pick_tile() {
#if defined(__x86_64__) && defined(__GNUC__)
  __builtin_cpu_init();
  if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) return avx2::attend_tile;
#endif
  return generic::attend_tile;
}

void check_rows(const at::Tensor& x, const char* name, const at::Tensor& q, int64_t length) {
  TORCH_CHECK(x.dim() == 3 && x.scalar_type() == at::kFloat && x.device().is_cpu(),
              "block_attention_: ", name, " must be a float32 CPU tensor (H, n, D)");
  TORCH_CHECK(x.size(0) == q.size(0) && x.size(2) == q.size(2),
              "block_attention_: ", name, " must have q's heads and head size");
  TORCH_CHECK(0 <= length && length <= x.size(1),
              "block_attention_: length must be in [0, n] for every tensor (", name, ")");
  TORCH_CHECK(x.stride(2) == 1, "block_attention_: the rows of ", name, " must be contiguous");
}

void block_attention_(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                      at::Tensor& out, const at::Tensor& heads, const at::Tensor& query_blocks,
                      const at::Tensor& key_blocks, int64_t block_size, int64_t length,
                      double scale, bool portable, int64_t half_window,
                      const std::optional<at::Tensor>& lse) {
  for (const auto& [x, name] : {std::pair{&q, "q"}, {&k, "k"}, {&v, "v"}, {&out, "out"}})
    check_rows(*x, name, q, length);
  // Tasks write disjoint rows of out only if out's rows overlap neither each other nor the
  // inputs (and no (head, query block) comes twice).
  at::assert_no_internal_overlap(out);
  for (const at::Tensor* input : {&q, &k, &v}) at::assert_no_overlap(out, *input);
  if (lse) {
    TORCH_CHECK(lse->dim() == 2 && lse->scalar_type() == at::kFloat && lse->device().is_cpu() &&
                    lse->size(0) == q.size(0) && lse->size(1) >= length && lse->stride(1) == 1,
                "block_attention_: lse must be a float32 CPU tensor (H, >= length) with "
                "contiguous rows");
    at::assert_no_internal_overlap(*lse);
    for (const at::Tensor* other : std::initializer_list<const at::Tensor*>{&q, &k, &v, &out})
      at::assert_no_overlap(*lse, *other);
  }
  const int64_t head_count = q.size(0), dim = q.size(2), size = block_size;
  TORCH_CHECK(size > 0, "block_attention_: block_size must be positive");
  const int64_t nb = (length + size - 1) / size;
  TORCH_CHECK(query_blocks.dim() == 1 && key_blocks.dim() == 2 &&
                  key_blocks.size(0) == query_blocks.size(0),
              "block_attention_: query_blocks (G,) and key_blocks (G, c) must agree");
  TORCH_CHECK(heads.dim() == 1 && (heads.numel() == 0 || heads.size(0) == query_blocks.size(0)),
              "block_attention_: heads must be empty or (G,)");
  for (const at::Tensor* index : {&heads, &query_blocks, &key_blocks})
    TORCH_CHECK(index->scalar_type() == at::kLong && index->is_contiguous() &&
                    index->device().is_cpu(),
                "block_attention_: block and head indices must be contiguous int64 CPU tensors");
  const int64_t items = query_blocks.size(0), count = key_blocks.size(1);
  TORCH_CHECK(count > 0, "block_attention_: every item must list at least one key block");
  const int64_t* head_of = heads.data_ptr<int64_t>();
  const int64_t* query_of = query_blocks.data_ptr<int64_t>();
  const int64_t* keys_of = key_blocks.data_ptr<int64_t>();
  for (int64_t g = 0; g < items; ++g) {
    TORCH_CHECK(0 <= query_of[g] && query_of[g] < nb,
                "block_attention_: query block out of range");
    if (heads.numel())
      TORCH_CHECK(0 <= head_of[g] && head_of[g] < head_count,
                  "block_attention_: head out of range");
    for (int64_t s = 0; s < count; ++s)
      TORCH_CHECK(0 <= keys_of[g * count + s] && keys_of[g * count + s] < nb,
                  "block_attention_: key block out of range");
  }
  TORCH_CHECK(half_window >= -1, "block_attention_: half_window must be -1 (none) or >= 0");
  static const TileFn best = pick_tile();
  const TileFn attend_tile = portable ? generic::attend_tile : best;
  const int64_t per_item = heads.numel() ? 1 : head_count;
  const int64_t tiles = (size + kTileRows - 1) / kTileRows;
  // a block holds at most min(size, length) rows: scratch for a chunk's scores and a tile's rows
  const int64_t longest = std::min(size, std::max<int64_t>(length, 1));
  const int64_t width = (std::min(longest, kTileRows) + 15) / 16 * 16;  // as in attend_tile
  const int64_t work_floats =
      2 * dim * width + 2 * width + (std::max(kChunkKeys, longest) + 3) * width;
  const float* qd = q.const_data_ptr<float>();
  const float* kd = k.const_data_ptr<float>();
  const float* vd = v.const_data_ptr<float>();
  float* od = out.mutable_data_ptr<float>();
  float* lse_d = lse ? lse->mutable_data_ptr<float>() : nullptr;
  const int64_t lse_head = lse ? lse->stride(0) : 0;
  const float factor = static_cast<float>(scale);
  at::parallel_for(0, items * per_item * tiles, 1, [&](int64_t begin, int64_t end) {
    std::vector<float> work(work_floats);
    std::vector<const float*> keys(count), values(count);
    std::vector<int64_t> lengths(count), starts(count);
    for (int64_t task = begin; task < end; ++task) {
      const int64_t g = task / (per_item * tiles), rest = task % (per_item * tiles);
      const int64_t h = heads.numel() ? head_of[g] : rest / tiles;
      const int64_t first = query_of[g] * size + (rest % tiles) * kTileRows;  // the tile's row
      const int64_t rows = std::min({kTileRows, (query_of[g] + 1) * size - first, length - first});
      if (rows <= 0) continue;  // a tile past the sequence's end
      for (int64_t s = 0; s < count; ++s) {
        const int64_t start = keys_of[g * count + s] * size;
        keys[s] = kd + h * k.stride(0) + start * k.stride(1);
        values[s] = vd + h * v.stride(0) + start * v.stride(1);
        lengths[s] = std::min(size, length - start);
        starts[s] = start;
      }
      attend_tile(qd + h * q.stride(0) + first * q.stride(1), q.stride(1), rows, keys.data(),
                  values.data(), lengths.data(), count, size, k.stride(1), v.stride(1), dim,
                  factor, half_window, first, starts.data(),
                  od + h * out.stride(0) + first * out.stride(1), out.stride(1),
                  lse_d ? lse_d + h * lse_head + first : nullptr, work.data());
    }
  });
}

}  // namespace

TORCH_LIBRARY_FRAGMENT(longenc, m) {
  // portable: the generic build even where the AVX2 one runs (so that tests exercise both)
  m.def(
      "block_attention_(Tensor q, Tensor k, Tensor v, Tensor(a!) out, Tensor heads, "
      "Tensor query_blocks, Tensor key_blocks, int block_size, int length, float scale, "
      "bool portable=False, int half_window=-1, Tensor(b!)? lse=None) -> ()");
}

TORCH_LIBRARY_IMPL(longenc, CPU, m) { m.impl("block_attention_", &block_attention_); }
