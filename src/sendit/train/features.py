"""Head-only trials of `sendit tune` without re-running the encoder: the frozen model runs once per split, and
every trial trains its head on what it computed.

A head-only trial spends nearly all its time running the frozen encoder, and computes the same features for a
tweet in every epoch of every trial (dropout aside). `FeatureModel` stands in for the model inside `engine.fit`,
so a trial keeps the same batches, optimizer, schedule, validation and pruning: it looks each row's features up and
runs the model's own head module on them. The features are the head's input with the model in eval mode, so
dropout in the frozen part is off (a linear probe on fixed features); on a model without dropout a cached trial
trains exactly as one through the whole model does (tests/test_tune.py). A head that is given whole sequences
and picks its position itself (RoBERTa's) is left alone: its trials train through the whole model.
"""

from __future__ import annotations

from types import SimpleNamespace

import torch
from torch import nn

from sendit.train.batching import Encoded, collate, token_batches
from sendit.train.device import autocast
from sendit.train.engine import MAX_TOKENS
from sendit.train.models import head_module


class Unsupported(Exception):
    """The head reads whole sequences itself (RoBERTa's classification head takes the first token): which position
    it uses is the head's business, so its trials train through the whole model instead."""


@torch.no_grad()  # not inference_mode: the head's backward keeps these tensors as its inputs
def head_inputs(model: nn.Module, data: Encoded, precision: str, batch_size: int = 256) -> torch.Tensor:
    """What the head module receives for each row, (rows, hidden) in row order, with the model in eval mode. A
    linear head applied at every position (OPT's `score`) is read at the position the model pools: the last
    non-pad token, found as transformers finds it. Raises Unsupported for any other head given whole sequences."""
    head = head_module(model)
    device = next(model.parameters()).device
    max_tokens = MAX_TOKENS.get(device.type, batch_size * 128)  # the inference loop's batches
    captured: list[torch.Tensor] = []
    hook = head.register_forward_pre_hook(lambda module, args: captured.append(args[0]))
    was_training = model.training
    model.eval()
    out = None
    try:
        for idx in token_batches(data.lengths, batch_size, max_tokens):
            b = collate(data, idx, device)
            captured.clear()
            with autocast(device, precision):
                model(input_ids=b["input_ids"], attention_mask=b["attention_mask"])
            x = captured[-1]
            if x.dim() == 3:
                if not isinstance(head, nn.Linear):
                    raise Unsupported(type(head).__name__)
                positions = torch.arange(x.shape[1], device=device)
                last = (positions * (b["input_ids"] != data.pad_id)).argmax(-1)
                x = x[torch.arange(len(idx), device=device), last]
            if out is None:
                out = torch.zeros((len(data), x.shape[-1]), dtype=torch.float32, device=device)
            out[torch.as_tensor(idx, device=device)] = x.float()
    finally:
        hook.remove()
        model.train(was_training)
    return out


class FeatureModel(nn.Module):
    """The head of a model on precomputed features, called like the model: `(input_ids, attention_mask) ->
    .logits`. Rows are found by their tokens (`rows`: token ids -> row of `features`), so any batch of the splits
    the features were computed for can be passed."""

    def __init__(self, head: nn.Module, rows: dict[tuple[int, ...], int], features: torch.Tensor):
        super().__init__()
        self.head = head  # the model's own module: what the trial trains is the model's head
        self.rows = rows
        self.features = features  # shared by every trial's FeatureModel, never copied

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> SimpleNamespace:
        lengths = attention_mask.sum(-1).tolist()
        idx = [self.rows[tuple(row[:n])] for row, n in zip(input_ids.tolist(), lengths)]
        return SimpleNamespace(logits=self.head(self.features[idx]))


def feature_model(model: nn.Module, splits: list[Encoded], precision: str, cache: dict,
                  key: tuple) -> FeatureModel | None:
    """`model`'s head on the features of `splits`, computed on the first call for `key` (what the frozen part's
    weights depend on: the base model, the seed that drew its new parameters, the precision) and reused after;
    None when the head reads whole sequences itself (then the trial trains through the whole model)."""
    if key not in cache:
        try:
            features = [head_inputs(model, data, precision) for data in splits]
        except Unsupported:
            cache[key] = None
        else:
            rows: dict[tuple[int, ...], int] = {}
            start = 0
            for data in splits:
                for i, ids in enumerate(data.input_ids):
                    rows.setdefault(tuple(ids), start + i)  # a repeated tweet has the same features
                start += len(data)
            cache[key] = (rows, torch.cat(features))
    if cache[key] is None:
        return None
    return FeatureModel(head_module(model), *cache[key])
