"""Batches: tweets tokenised once, padded per batch to the batch's longest row, grouped by length.

Tweets are short (OPT tokenizer: mean 22 tokens, p95 39), so batches are padded dynamically and grouped by
length; padding every tweet to 128 would spend ~5x the compute on pad tokens. Batches are global: under
`accelerate launch` each of N processes takes 1/N of every batch, so results do not depend on the process count.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch

if TYPE_CHECKING:
    from sendit.train.device import Processes


@dataclass
class Encoded:
    """Pre-tokenised texts (tokenised once, reused every epoch)."""

    input_ids: list[list[int]]
    labels: np.ndarray
    pad_id: int

    def __len__(self) -> int:
        return len(self.input_ids)

    @property
    def lengths(self) -> np.ndarray:
        return np.fromiter((len(x) for x in self.input_ids), dtype=np.int64, count=len(self.input_ids))


def encode(tokenizer, texts: list[str], labels: np.ndarray | None, max_length: int) -> Encoded:
    ids = tokenizer(list(texts), truncation=True, max_length=max_length)["input_ids"]
    labels = np.zeros(len(ids), dtype=np.int64) if labels is None else np.asarray(labels, dtype=np.int64)
    return Encoded(ids, labels, tokenizer.pad_token_id)


def collate(data: Encoded, idx: list[int], device: torch.device) -> dict[str, torch.Tensor]:
    width = max(len(data.input_ids[i]) for i in idx)
    ids = torch.full((len(idx), width), data.pad_id, dtype=torch.long)
    mask = torch.zeros((len(idx), width), dtype=torch.long)
    for row, i in enumerate(idx):
        seq = data.input_ids[i]
        ids[row, : len(seq)] = torch.tensor(seq)
        mask[row, : len(seq)] = 1
    return {
        "input_ids": ids.to(device),
        "attention_mask": mask.to(device),
        "labels": torch.as_tensor(data.labels[idx]).to(device),
        "idx": torch.as_tensor(idx),
    }


def length_grouped_batches(lengths: np.ndarray, batch_size: int, seed: int, epoch: int, group: int = 50) -> list[list[int]]:
    """Shuffle, sort by length inside groups of `group` batches, then shuffle the batches: little padding,
    still random. Deterministic in (seed, epoch), which is what makes resuming at an epoch boundary exact."""
    rng = np.random.default_rng([seed, epoch])
    order = rng.permutation(len(lengths))
    batches = []
    span = batch_size * group
    for start in range(0, len(order), span):
        chunk = order[start : start + span]
        chunk = chunk[np.argsort(-lengths[chunk], kind="stable")]
        batches += [chunk[i : i + batch_size].tolist() for i in range(0, len(chunk), batch_size)]
    return [batches[i] for i in rng.permutation(len(batches))]


def shard(batch: list[int], accelerator: Processes) -> list[int]:
    """This process's rows of a global batch; none when the batch has fewer rows than there are processes."""
    return batch[accelerator.process_index :: accelerator.num_processes]


def train_shard(batch: list[int], accelerator: Processes) -> tuple[list[int], float]:
    """This process's training rows of a global batch and the weight of their mean loss.

    DDP averages the processes' gradients, so each mean loss is weighted by its share of the batch (rows x
    processes / batch rows): the average is then the batch's mean, also when a short last batch splits unevenly.
    A process left with no rows still runs forward and backward, on one of the batch's rows at weight 0, since
    every process must join each gradient all-reduce."""
    mine = shard(batch, accelerator)
    return mine or batch[:1], len(mine) * accelerator.num_processes / len(batch)


def token_batches(lengths: np.ndarray, batch_size: int, max_tokens: int) -> list[list[int]]:
    """Rows longest first, cut into batches of at most `batch_size` rows and `max_tokens` padded tokens: a long
    tweet's batch is small, so few pad tokens are computed even when there are fewer rows than `batch_size`."""
    order = np.argsort(-lengths, kind="stable")
    batches, i = [], 0
    while i < len(order):
        n = min(batch_size, max(1, max_tokens // max(int(lengths[order[i]]), 1)))
        batches.append(order[i : i + n].tolist())
        i += n
    return batches
