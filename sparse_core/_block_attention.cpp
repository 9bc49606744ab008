// Block-sparse attention without gathering:
// torch.ops.longenc.block_attention_(q, k, v, out, heads, query_blocks, key_blocks, scale)
// writes, for every item g and head h (every head, or heads[g] when `heads` is not empty),
//   out[h, query_blocks[g]] = softmax(scale · Q Kᵀ) V,  Q = q[h, query_blocks[g]],
//   K, V = the key blocks k[h, key_blocks[g, 0..c)], v[...] one after another.
// q, k, v, out: float32 (H, nb, T, D), each block a contiguous T × D run (any strides between
// heads and blocks); every listed block is whole and every pair allowed (the executor sends
// groups that need a mask to SDPA instead).
//
// Why: torch's CPU SDPA takes its keys as one tensor, so the executor copies every listed block
// into a workspace first (each key block is copied once per query block that lists it), and for
// 64-row queries it runs 32-row tiles. Here each query tile of up to 64 rows reads its listed
// blocks where they are, and the two products run on register tiles over 8-wide GCC vectors
// (AVX2 + FMA where the CPU has it, checked at run time; SSE or NEON halves elsewhere), with the
// softmax's exp from _vector_exp.h. Built on first use by sparse_core/_native.py with the other
// kernels into one library.

#include <ATen/ATen.h>
#include <ATen/MemoryOverlap.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <limits>
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

using TileFn = void (*)(const float*, int64_t, const float* const*, const float* const*, int64_t,
                        int64_t, int64_t, float, float*, float*);

TileFn pick_tile() {
#if defined(__x86_64__) && defined(__GNUC__)
  __builtin_cpu_init();
  if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) return avx2::attend_tile;
#endif
  return generic::attend_tile;
}

void check_blocks(const at::Tensor& x, const char* name, const at::Tensor& q) {
  TORCH_CHECK(x.dim() == 4 && x.scalar_type() == at::kFloat && x.device().is_cpu(),
              "block_attention_: ", name, " must be a float32 CPU tensor (H, nb, T, D)");
  TORCH_CHECK(x.sizes() == q.sizes(), "block_attention_: ", name, " must have q's shape");
  TORCH_CHECK(x.stride(3) == 1 && x.stride(2) == x.size(3),
              "block_attention_: each block of ", name, " must be one contiguous T × D run");
}

void block_attention_(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                      at::Tensor& out, const at::Tensor& heads, const at::Tensor& query_blocks,
                      const at::Tensor& key_blocks, double scale, bool portable) {
  for (const auto& [x, name] : {std::pair{&q, "q"}, {&k, "k"}, {&v, "v"}, {&out, "out"}})
    check_blocks(*x, name, q);
  // Tasks write disjoint blocks of out only if out's blocks do not overlap each other or the
  // inputs; each (head, query block) must come at most once among the items (the executor's
  // groups partition them).
  at::assert_no_internal_overlap(out);
  for (const at::Tensor* input : {&q, &k, &v}) at::assert_no_overlap(out, *input);
  const int64_t head_count = q.size(0), nb = q.size(1), size = q.size(2), dim = q.size(3);
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
  static const TileFn best = pick_tile();
  const TileFn attend_tile = portable ? generic::attend_tile : best;
  const int64_t per_item = heads.numel() ? 1 : head_count;
  const int64_t tiles = (size + kTileRows - 1) / kTileRows;
  const int64_t width = (std::min(size, kTileRows) + 15) / 16 * 16;  // as in attend_tile
  const int64_t work_floats =
      2 * dim * width + 2 * width + (std::max(kChunkKeys, size) + 3) * width;
  const float* qd = q.const_data_ptr<float>();
  const float* kd = k.const_data_ptr<float>();
  const float* vd = v.const_data_ptr<float>();
  float* od = out.mutable_data_ptr<float>();
  const float factor = static_cast<float>(scale);
  at::parallel_for(0, items * per_item * tiles, 1, [&](int64_t begin, int64_t end) {
    std::vector<float> work(work_floats);
    std::vector<const float*> keys(count), values(count);
    for (int64_t task = begin; task < end; ++task) {
      const int64_t g = task / (per_item * tiles), rest = task % (per_item * tiles);
      const int64_t h = heads.numel() ? head_of[g] : rest / tiles;
      const int64_t first = (rest % tiles) * kTileRows;
      for (int64_t s = 0; s < count; ++s) {
        keys[s] = kd + h * k.stride(0) + keys_of[g * count + s] * k.stride(1);
        values[s] = vd + h * v.stride(0) + keys_of[g * count + s] * v.stride(1);
      }
      const int64_t row = first * dim;
      attend_tile(qd + h * q.stride(0) + query_of[g] * q.stride(1) + row,
                  std::min(kTileRows, size - first), keys.data(), values.data(), count, size, dim,
                  factor, od + h * out.stride(0) + query_of[g] * out.stride(1) + row, work.data());
    }
  });
}

}  // namespace

TORCH_LIBRARY_FRAGMENT(longenc, m) {
  // portable: the generic build even where the AVX2 one runs (so that tests exercise both)
  m.def(
      "block_attention_(Tensor q, Tensor k, Tensor v, Tensor(a!) out, Tensor heads, "
      "Tensor query_blocks, Tensor key_blocks, float scale, bool portable=False) -> ()");
}

TORCH_LIBRARY_IMPL(longenc, CPU, m) { m.impl("block_attention_", &block_attention_); }
