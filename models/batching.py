"""Forming forward passes from inputs of mixed lengths so that little padding is computed."""

from __future__ import annotations

import torch


def group_by_length(lengths: list[int], max_group_tokens: int) -> list[list[int]]:
    """Split input indices into groups, each run as one padded forward pass.

    Inputs are taken longest first; a group closes when adding the next input would make its
    padded size (rows × longest) exceed max_group_tokens, or when the next input is shorter than
    half the group's longest, so that at most half of any row is padding. An input longer than
    the budget gets a group of its own.
    """
    order = sorted(range(len(lengths)), key=lambda index: -lengths[index])
    groups: list[list[int]] = []
    for index in order:
        if groups:
            group = groups[-1]
            longest = lengths[group[0]]
            fits = (len(group) + 1) * longest <= max_group_tokens
            if fits and 2 * lengths[index] >= longest:
                group.append(index)
                continue
        groups.append([index])
    return groups


def pad(
    batch: list[list[int]], pad_id: int, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-pad id lists into (B, n) ids and their (B,) lengths, both on device."""
    longest = max(len(ids) for ids in batch)
    ids = torch.full((len(batch), longest), pad_id, dtype=torch.long)
    for row, token_ids in enumerate(batch):
        ids[row, : len(token_ids)] = torch.tensor(token_ids, dtype=torch.long)
    lengths = torch.tensor([len(token_ids) for token_ids in batch], dtype=torch.long)
    return ids.to(device), lengths.to(device)
