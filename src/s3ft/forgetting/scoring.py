"""Teacher-forced log-probabilities of completions, the one forward pass every likelihood measure uses."""

from __future__ import annotations

Encoded = tuple[list[int], int]
"""(token ids of context + completion, context length): the completion is ids[context length:]."""


def completion_logprobs(model, batch: list[Encoded], pad_id: int):
    """Log-softmax over the vocabulary at every completion token of every row: a list of [n_i, V] tensors.

    Rows are left-padded (explicit position ids) so every completion ends at the right edge, and
    the LM head runs only on the last positions (`logits_to_keep`): the vocabulary projection of
    the context tokens is never computed.
    """
    import torch
    width = max(len(ids) for ids, _ in batch)
    inp = torch.full((len(batch), width), pad_id, dtype=torch.long)
    att = torch.zeros((len(batch), width), dtype=torch.long)
    for j, (ids, _) in enumerate(batch):
        inp[j, width - len(ids):] = torch.tensor(ids)
        att[j, width - len(ids):] = 1
    pos = (att.cumsum(1) - 1).clamp(min=0)
    keep = max(len(ids) - p for ids, p in batch) + 1  # position t predicts token t+1
    dev = model.device
    logits = model(input_ids=inp.to(dev), attention_mask=att.to(dev), position_ids=pos.to(dev),
                   logits_to_keep=keep).logits
    out = []
    for j, (ids, p) in enumerate(batch):
        n = len(ids) - p
        # the last n+1 kept positions; the final one predicts past the end and is dropped
        out.append(torch.log_softmax(logits[j, keep - n - 1:keep - 1].float(), dim=-1) if n > 0 else None)
    return out


def token_nll(logprobs, ids: list[int], start: int):
    """Per-token NLL of ids[start:] given their log-softmax rows."""
    import torch
    tgt = torch.tensor(ids[start:], device=logprobs.device)
    return -logprobs.gather(1, tgt[:, None]).squeeze(1)
