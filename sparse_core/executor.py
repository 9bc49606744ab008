"""The CPU block-sparse executor: any `Pattern` in O(listed blocks) time and memory.

One sequence at a time, over its valid tokens (so that an input's result never depends on its
batch). Query blocks are grouped by how many key blocks they list; a group's listed key blocks
are gathered by block index (one copy of the keys each query block uses) and the group runs as one
SDPA call, (G, H, T, D) queries against (G, H, c·T, D) keys. A mask is built only for groups that
list a partial block or the block the sequence ends in; elsewhere SDPA runs unmasked. No
torch.compile, nothing n×n.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from sparse_core.pattern import BlockLists, MaskMod, Pattern, restrict_to_lengths

# Block size for patterns that do not fix one: T query rows meet c·T keys per SDPA batch row.
# Larger blocks make larger matrix products but compute more masked pairs at a window's edges.
DEFAULT_BLOCK = 64
# Gathered key and value elements per SDPA call (32 MiB in float32, both together): bounds the
# extra memory at the output plus this, whatever the length.
GATHER_BUDGET = 1 << 23


# The largest executor block. A pattern defined on larger blocks (block_size up to 2²⁰) runs on
# blocks of this size from its resampled lists, instead of padding every sequence to a whole
# pattern block. A constant, not the batch's length, so that a sequence's block size (and so
# its result, bit for bit) does not depend on the batch it came in.
MAX_BLOCK = 1024


def choose_block(pattern: Pattern) -> int:
    return min(pattern.block_size or DEFAULT_BLOCK, MAX_BLOCK)


def run_pattern(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    pattern: Pattern,
    lengths: torch.Tensor | None,
    block: int | None = None,
) -> torch.Tensor:
    """Attention of `pattern` on (B, H, n, D) inputs; returns (B, H, n, D), padded rows zero.

    block: the executor's block size; None is the pattern's own (at most MAX_BLOCK) or
    DEFAULT_BLOCK.
    """
    batch, heads, n, head_dim = q.shape
    size = block or choose_block(pattern)
    if lengths is None:
        lengths = torch.full((batch,), n, dtype=torch.int64, device=q.device)
    lengths = lengths.to(q.device, torch.int64).clamp(0, n)
    blocks = -(-n // size)
    lists = restrict_to_lengths(pattern.key_blocks(size, blocks), lengths)
    mask_mod = pattern.mask_mod()
    out = torch.zeros_like(q, memory_format=torch.contiguous_format)
    for b, length in enumerate(lengths.tolist()):
        if length:
            _run_sequence(q, k, v, out, b, length, lists, mask_mod)
    return out


def _run_sequence(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    out: torch.Tensor,
    b: int,
    length: int,
    lists: BlockLists,
    mask_mod: MaskMod,
) -> None:
    """Writes sequence b's valid rows of `out`, group by group."""
    size = lists.size
    query_blocks = -(-length // size)
    indices = lists.indices[b, :, :query_blocks]  # (H', nq, width)
    full = lists.full[b, :, :query_blocks]
    counts = (indices >= 0).sum(dim=-1)  # (H', nq)
    per_head = indices.shape[0] > 1
    heads, _, head_dim = q[b].shape
    # (H, nq, T, D) block views of the sequence; a copy padded to whole blocks only when its
    # length is not a multiple of T. Whole blocks are then gathered by index: each a contiguous
    # T·D run per head, where gathering rows would copy D floats at a time.
    blocked = [_blocks(t[b], length, size) for t in (q, k, v)]
    if length % size == 0:  # write straight into the output's (zeroed) rows
        result_blocks = out[b, :, :length].unflatten(1, (query_blocks, size))  # (H, nq, T, D)
    else:  # zeros: a query block that lists no key block (no pattern here has one) stays defined
        result_blocks = torch.zeros(
            (heads, query_blocks, size, head_dim), dtype=q.dtype, device=q.device
        )  # (H, nq, T, D)
    for count in counts.unique().tolist():
        if count == 0:
            continue
        head_ids, block_ids = (counts == count).nonzero(as_tuple=True)  # items of this count
        per_item = (1 if per_head else heads) * count * size * head_dim
        chunk = max(1, GATHER_BUDGET // (2 * per_item))
        for start in range(0, len(block_ids), chunk):
            items = slice(start, start + chunk)
            _run_group(
                *blocked, result_blocks, b, length, mask_mod,
                head_ids[items] if per_head else None,
                block_ids[items],
                indices[head_ids[items], block_ids[items], :count],
                full[head_ids[items], block_ids[items], :count],
            )  # fmt: skip
    if length % size:
        out[b, :, :length] = result_blocks.flatten(1, 2)[:, :length]


def _blocks(x: torch.Tensor, length: int, size: int) -> torch.Tensor:
    """(H, n, D) -> (H, nq, T, D) over the first `length` rows, zero-padded to whole blocks."""
    rows = -(-length // size) * size
    x = x[:, :length]
    if rows != length:
        x = F.pad(x, (0, 0, 0, rows - length))  # (H, nq·T, D)
    return x.unflatten(1, (rows // size, size))


def _run_group(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    out: torch.Tensor,
    b: int,
    length: int,
    mask_mod: MaskMod,
    head_ids: torch.Tensor | None,
    block_ids: torch.Tensor,
    key_blocks: torch.Tensor,
    key_full: torch.Tensor,
) -> None:
    """One SDPA call: G query blocks (block_ids (G,)) against their c listed key blocks each
    (key_blocks, key_full: (G, c)); head_ids (G,) when lists differ per head, else all heads.
    q, k, v, out: (H, nq, T, D) block views of sequence b."""
    device, size = q.device, q.shape[2]
    offsets = torch.arange(size, device=device)
    rows = block_ids[:, None] * size + offsets  # (G, T)
    keys = (key_blocks[..., None] * size + offsets).flatten(1)  # (G, c·T)
    key_valid = keys < length
    mask = None
    if not bool(key_full.all()) or not bool(key_valid.all()):
        mask = key_valid[:, None, :]  # (G, 1, c·T)
        if not bool(key_full.all()):
            mask = mask & _allowed(mask_mod, b, head_ids, rows, key_blocks, key_full)
        # Items lead and heads follow, (G, H, T, D), so that the (G, 1, T, c·T) mask broadcasts
        # over heads: with heads leading, torch's CPU SDPA took 4-5× as long for the same mask.
        mask = mask[:, None]
    if head_ids is None:
        heads, _, _, head_dim = q.shape
        queries = q[:, block_ids].transpose(0, 1)  # (G, H, T, D)
        picked = key_blocks.flatten()  # (G·c,)
        gathered_k, gathered_v = (
            t[:, picked].unflatten(1, key_blocks.shape).flatten(2, 3).transpose(0, 1)
            for t in (k, v)
        )  # (G, H, c·T, D)
        result = F.scaled_dot_product_attention(queries, gathered_k, gathered_v, attn_mask=mask)
        out[:, block_ids] = result.transpose(0, 1)  # (H, G, T, D)
    else:
        queries = q[head_ids, block_ids][:, None]  # (G, 1, T, D)
        gathered_k, gathered_v = (
            t[head_ids[:, None], key_blocks].flatten(1, 2)[:, None] for t in (k, v)
        )  # (G, 1, c·T, D)
        result = F.scaled_dot_product_attention(queries, gathered_k, gathered_v, attn_mask=mask)
        out[head_ids, block_ids] = result[:, 0]


def _allowed(
    mask_mod: MaskMod,
    b: int,
    head_ids: torch.Tensor | None,
    rows: torch.Tensor,
    key_blocks: torch.Tensor,
    key_full: torch.Tensor,
) -> torch.Tensor:
    """(G, T, c·T) bool: True on full blocks, the predicate on the P partial ones only.

    rows: (G, T) query positions; key_blocks, key_full: (G, c). A window's query block lists
    about 2 partial blocks among its 1 + w/T, so the predicate runs on a fraction of the pairs.
    """
    items, size = rows.shape
    count = key_blocks.shape[1]
    device = rows.device
    allowed = key_full[:, None, :, None].expand(items, size, count, size).clone()  # (G, T, c, T)
    item, slot = (~key_full).nonzero(as_tuple=True)  # (P,) each
    keys = key_blocks[item, slot][:, None] * size + torch.arange(size, device=device)  # (P, T)
    heads = (
        head_ids[item][:, None, None]
        if head_ids is not None
        else torch.zeros((), dtype=torch.int64, device=device)
    )
    here = torch.full((), b, device=device)
    allowed[item, :, slot, :] = mask_mod(here, heads, rows[item][:, :, None], keys[:, None, :])
    return allowed.view(items, size, count * size)
