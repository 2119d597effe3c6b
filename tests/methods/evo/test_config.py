"""The evolutionary methods' configs refuse bad input in one line."""
from __future__ import annotations

import pytest

from prunekit.errors import PrunekitError


def test_configs_reject_bad_input_in_one_line():
    from prunekit.methods.evo import EvoDepthConfig, EvoSparsityConfig, OWLConfig

    for make in (lambda: EvoDepthConfig(remove_layers=2, stages="8:2"), lambda: EvoDepthConfig(fitness="xyz"),
                 lambda: EvoDepthConfig(executor="dask"), lambda: EvoSparsityConfig(sparsity=0.5, base="magnitude"),
                 lambda: EvoSparsityConfig(sparsity=0.5, pattern="1:4"), lambda: OWLConfig(sparsity=0.95, lam=0.1)):
        with pytest.raises(PrunekitError) as e:
            make()
        assert "\n" not in str(e.value)
    assert EvoSparsityConfig(pattern="2:8").levels()[0][2].pattern == "2:8"
