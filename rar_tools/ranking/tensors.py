"""Token tensors of the local ranker's prompts: tokens added or dropped with the processor's per-token
fields kept in step, right-padded batches, and log-probabilities of target tokens."""

from __future__ import annotations

import torch

# Per-token processor outputs, and the value a token appended to the prompt gets in each.
PER_TOKEN_FILL = {"attention_mask": 1, "mm_token_type_ids": 0, "token_type_ids": 0}


def add_tokens(inputs: dict, ids: torch.Tensor, at_start: bool = False) -> dict:
    """`inputs` (batch of one) with text token `ids` prepended or appended, per-token fields kept in step."""
    out = dict(inputs)
    for key, fill in [("input_ids", None), *PER_TOKEN_FILL.items()]:
        if key not in inputs:
            continue
        old = inputs[key]
        new = ids.to(old) if fill is None else torch.full((len(ids),), fill).to(old)
        parts = [new[None], old] if at_start else [old, new[None]]
        out[key] = torch.cat(parts, dim=1)
    return out


def drop_tokens(inputs: dict, n: int) -> dict:
    """`inputs` (batch of one) without its last `n` tokens, per-token fields kept in step."""
    if n == 0:
        return inputs
    out = dict(inputs)
    for key in ("input_ids", *PER_TOKEN_FILL):
        if key in inputs:
            out[key] = inputs[key][:, : inputs[key].shape[1] - n]
    return out


def pad_right(seqs: list[list[int]], pad_id: int, device) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-padded `(ids, mask)` tensors of shape (len(seqs), longest)."""
    width = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for row, seq in enumerate(seqs):
        ids[row, : len(seq)] = torch.tensor(seq, dtype=torch.long)
        mask[row, : len(seq)] = 1
    return ids.to(device), mask.to(device)


def token_logprobs(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """log p(target) under each position's logits, computed in float32."""
    logits = logits.float()
    return logits.gather(-1, targets[..., None])[..., 0] - logits.logsumexp(-1)
