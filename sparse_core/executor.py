"""The CPU block-sparse executor: any `Pattern` in O(listed blocks) time and memory.

One sequence at a time, over its valid tokens (so that an input's result never depends on its
batch). Query blocks are grouped by how many key blocks they list; a group's listed key blocks
are gathered by block index (index_select of whole T·D runs into one workspace reused by every
group: fresh buffers would page-fault in at each group) and the group runs as one SDPA call,
(G, H, T, D) queries against (G, H, c·T, D) keys. A mask is built only for groups that
list a partial block or the block the sequence ends in; elsewhere SDPA runs unmasked. No
torch.compile, nothing n×n.

In float32 with the C++ kernels built (`sparse_core/_block_attention.cpp`), query blocks whose
listed blocks the pattern allows whole skip the gathering, the block the sequence ends in
included: the kernel reads each listed block where it lies in the model's rows, on 64-row query
tiles (SDPA runs 32-row tiles for 64 queries), and no row past the sequence's length. Masked
items, other dtypes, and machines without a compiler take the SDPA path, with the same results
to rounding.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from sparse_core import _native
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
    # Every row is written: by its query block's SDPA, or zeroed (padding; a query block that
    # lists no key block, which no pattern here has). Zero-filling the whole output first took
    # 3% of bigbird's time at 16k.
    out = torch.empty_like(q, memory_format=torch.contiguous_format)
    for b, length in enumerate(lengths.tolist()):
        out[b, :, length:] = 0
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
    kernel = _native.block_attention_for(q, k, v)
    # Items whose listed blocks the pattern allows whole take the C++ kernel, on the sequence's
    # own rows (it reads and writes no row past `length`, so the block the sequence ends in needs
    # no mask); the rest, below, gather from block copies for SDPA.
    plain = None
    if kernel is not None:
        plain = (full | (indices < 0)).all(dim=-1) & (counts > 0)  # (H', nq)
    if plain is not None and bool(plain.all()):  # every item: straight into out's rows
        _run_kernel(kernel, q[b], k[b], v[b], out[b], plain, counts, indices, size, length)
        return
    # (H, nq, T, D) block views of the sequence; a copy padded to whole blocks only when its
    # length is not a multiple of T. Whole blocks are then gathered by index: each a contiguous
    # T·D run per head, where gathering rows would copy D floats at a time.
    blocked = [_blocks(t[b], length, size) for t in (q, k, v)]
    if length % size == 0:  # write straight into the output's rows
        result_blocks = out[b, :, :length].unflatten(1, (query_blocks, size))  # (H, nq, T, D)
    else:  # every query block is written below (those listing no key block with zeros)
        result_blocks = torch.empty(
            (heads, query_blocks, size, head_dim), dtype=q.dtype, device=q.device
        )  # (H, nq, T, D)
    if plain is not None:
        rows = result_blocks.flatten(1, 2)  # (H, nq·T, D)
        _run_kernel(kernel, q[b], k[b], v[b], rows, plain, counts, indices, size, length)
        counts = counts.masked_fill(plain, -1)  # done
    # One workspace for every group's gathered keys and values: fresh multi-MB tensors per group
    # would each page-fault in, which took as long as the gathers' copying itself.
    workspace = torch.empty(GATHER_BUDGET, dtype=q.dtype, device=q.device)
    for count in counts.unique().tolist():
        if count < 0:  # done in the kernel
            continue
        head_ids, block_ids = (counts == count).nonzero(as_tuple=True)  # items of this count
        if count == 0:  # nothing to attend: zeros
            if per_head:
                result_blocks[head_ids, block_ids] = 0
            else:
                result_blocks[:, block_ids] = 0
            continue
        run = None if per_head else _affine_run(indices[0, block_ids, :count])
        if run is not None:  # every item's keys one view of the sequence: nothing gathered
            _run_group(
                *blocked, result_blocks, workspace, b, length, mask_mod, None, block_ids,
                indices[0, block_ids, :count], full[0, block_ids, :count], run,
            )  # fmt: skip
            continue
        per_item = (1 if per_head else heads) * count * size * head_dim
        chunk = max(1, GATHER_BUDGET // (2 * per_item))
        if chunk * 2 * per_item > workspace.numel():  # one item over the budget: its own buffer
            workspace = torch.empty(chunk * 2 * per_item, dtype=q.dtype, device=q.device)
        for start in range(0, len(block_ids), chunk):
            items = slice(start, start + chunk)
            _run_group(
                *blocked, result_blocks, workspace, b, length, mask_mod,
                head_ids[items] if per_head else None,
                block_ids[items],
                indices[head_ids[items], block_ids[items], :count],
                full[head_ids[items], block_ids[items], :count],
            )  # fmt: skip
    if length % size:
        out[b, :, :length] = result_blocks.flatten(1, 2)[:, :length]


def _run_kernel(
    kernel,
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    out: torch.Tensor,
    plain: torch.Tensor,
    counts: torch.Tensor,
    indices: torch.Tensor,
    size: int,
    length: int,
) -> None:
    """The `plain` items (H', nq) through the kernel, one call per list length: q, k, v the
    sequence's (H, n, D) rows, out (H, ≥ length, D) rows to write."""
    per_head = indices.shape[0] > 1
    for count in counts[plain].unique().tolist():
        head_ids, block_ids = (plain & (counts == count)).nonzero(as_tuple=True)
        kernel(
            q, k, v, out, head_ids if per_head else head_ids[:0], block_ids,
            indices[head_ids, block_ids, :count], size, length, q.shape[-1] ** -0.5,
        )  # fmt: skip


def _affine_run(key_blocks: torch.Tensor) -> tuple[int, int] | None:
    """(first, step) when item g's listed blocks (key_blocks: (G, c)) are the consecutive run
    from first + g·step, step >= 0 (global rows listing every block, a band's interior), so
    that their keys are one strided view; else None."""
    if key_blocks.shape[1] > 1 and not bool((key_blocks.diff(dim=1) == 1).all()):
        return None
    starts = key_blocks[:, 0]
    steps = starts.diff()
    step = int(steps[0]) if len(steps) else 0
    if step < 0 or not bool((steps == step).all()):
        return None
    return int(starts[0]), step


def _run_view(x: torch.Tensor, items: int, count: int, run: tuple[int, int]) -> torch.Tensor:
    """(H, nq, T, D) blocks -> (H, G, c·T, D): item g's blocks first + g·step ... + c - 1."""
    first, step = run
    heads, _, size, head_dim = x.shape
    return x.as_strided(
        (heads, items, count * size, head_dim),
        (x.stride(0), step * x.stride(1), x.stride(2), x.stride(3)),
        x.storage_offset() + first * x.stride(1),
    )


def _blocks(x: torch.Tensor, length: int, size: int) -> torch.Tensor:
    """(H, n, D) -> (H, nq, T, D) over the first `length` rows, zero-padded to whole blocks;
    contiguous, so that a block is one T·D run. The model's q, k and v are views of its packed
    rows, (n, H, D) in memory: index_select copied the whole sequence for every group it
    gathered from such a view (at 32k tokens, 3.4 s of a 4.2 s bigbird call)."""
    rows = -(-length // size) * size
    x = x[:, :length]
    if rows != length:
        x = F.pad(x, (0, 0, 0, rows - length))  # (H, nq·T, D), a contiguous copy
    return x.contiguous().unflatten(1, (rows // size, size))


def _run_group(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    out: torch.Tensor,
    workspace: torch.Tensor,
    b: int,
    length: int,
    mask_mod: MaskMod,
    head_ids: torch.Tensor | None,
    block_ids: torch.Tensor,
    key_blocks: torch.Tensor,
    key_full: torch.Tensor,
    run: tuple[int, int] | None = None,
) -> None:
    """One SDPA call: G query blocks (block_ids (G,)) against their c listed key blocks each
    (key_blocks, key_full: (G, c)); head_ids (G,) when lists differ per head, else all heads.
    q, k, v, out: (H, nq, T, D) block views of sequence b. run: see `_affine_run`; the keys
    are then a view instead of a gathered copy."""
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
    heads, blocks, _, head_dim = q.shape
    items, count = key_blocks.shape
    per_head = 1 if head_ids is not None else heads
    gathered = workspace[: 2 * per_head * items * count * size * head_dim]
    if head_ids is None:
        queries = _gather_blocks(
            q, block_ids, q.new_empty((heads, items, size, head_dim))
        )  # (H, G, T, D)
        picked = key_blocks.flatten()  # (G·c,)
        shape = (heads, items * count, size, head_dim)
        if run is not None:
            gathered_k, gathered_v = (_run_view(t, items, count, run) for t in (k, v))
        else:
            gathered_k, gathered_v = (
                _gather_blocks(t, picked, part.view(shape)).view(
                    heads, items, count * size, head_dim
                )
                for t, part in zip((k, v), gathered.chunk(2), strict=True)
            )  # (H, G, c·T, D)
        # items lead, (G, H, T, D), so that a (G, 1, T, c·T) mask broadcasts over heads
        result = F.scaled_dot_product_attention(
            *(t.transpose(0, 1) for t in (queries, gathered_k, gathered_v)), attn_mask=mask
        ).transpose(0, 1)
        out.index_copy_(1, block_ids, result)  # (H, G, T, D)
    else:
        flat = [_flat_blocks(t) for t in (q, k, v, out)]
        if any(view is None for view in flat):  # a layout whose blocks are not T·D runs
            queries = q[head_ids, block_ids][:, None]  # (G, 1, T, D)
            gathered_k, gathered_v = (
                t[head_ids[:, None], key_blocks].flatten(1, 2)[:, None] for t in (k, v)
            )  # (G, 1, c·T, D)
            result = F.scaled_dot_product_attention(queries, gathered_k, gathered_v, attn_mask=mask)
            out[head_ids, block_ids] = result[:, 0]
            return
        (q_flat, q_step), (k_flat, k_step), (v_flat, v_step), (out_flat, out_step) = flat
        queries = q_flat.index_select(0, head_ids * q_step + block_ids)[:, None]  # (G, 1, T, D)
        shape = (items * count, size, head_dim)
        gathered_k, gathered_v = (
            torch.index_select(
                t, 0, (head_ids[:, None] * step + key_blocks).flatten(), out=part.view(shape)
            ).view(items, 1, count * size, head_dim)
            for (t, step), part in zip(
                ((k_flat, k_step), (v_flat, v_step)), gathered.chunk(2), strict=True
            )
        )  # (G, 1, c·T, D)
        result = F.scaled_dot_product_attention(queries, gathered_k, gathered_v, attn_mask=mask)
        out_flat.index_copy_(0, head_ids * out_step + block_ids, result[:, 0])


def _gather_blocks(x: torch.Tensor, picked: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
    """(H, nq, T, D) blocks -> `out` (H, P, T, D): blocks `picked` (P,) of every head. As rows of
    the flat (R, T, D) view where blocks are T·D runs (index_select along dim 0 copied 16 MB of
    blocks in 1.1 ms against 2.1 ms along dim 1 of the 4-D tensor); else along dim 1."""
    flat = _flat_blocks(x)
    if flat is None:
        return torch.index_select(x, 1, picked, out=out)
    rows, step = flat
    heads = x.shape[0]
    index = (torch.arange(heads, device=x.device)[:, None] * step + picked).flatten()
    torch.index_select(rows, 0, index, out=out.view(-1, *out.shape[2:]))
    return out


def _flat_blocks(x: torch.Tensor) -> tuple[torch.Tensor, int] | None:
    """(H, nq, T, D) blocks as one (R, T, D) view and the step h·step + t between heads, or
    None when a block is not one contiguous T·D run or heads are not whole blocks apart."""
    heads, blocks, size, head_dim = x.shape
    run = size * head_dim
    if x.stride()[1:] != (run, head_dim, 1) or x.stride(0) % run:
        return None
    step = x.stride(0) // run
    rows = (heads - 1) * step + blocks
    return x.as_strided((rows, size, head_dim), (run, head_dim, 1)), step


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
