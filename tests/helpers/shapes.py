"""What the evo-shape tests share."""
from __future__ import annotations

import copy

import torch

from prunekit.methods.evo.library import ShapeLoader
from prunekit.methods.evo.shape import build_model
from prunekit.models.adapter import ModelAdapter


def saved_and_masked(model, lib, genome, ids):
    """The DeciLM model of `genome`, and the logits of it and of the masked candidate the search scores."""
    small = build_model(ModelAdapter(model), lib, genome)
    masked = copy.deepcopy(model)
    loader = ShapeLoader(lib, ModelAdapter(masked))
    for i, level in enumerate(genome):
        loader(i, level, ModelAdapter(masked).layers[i])
    with torch.no_grad():
        return small, small(ids).logits, masked(ids).logits
