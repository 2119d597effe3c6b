"""SparseLLM (Bai et al. 2024): attention pruned locally with SparseGPT; each FFN pruned jointly
through auxiliary activations, alternating least-squares weight fits, SparseGPT re-pruning and
the closed-form / gradient updates of solvers/sparsellm.py, so the pruned FFN fits the dense FFN
output rather than each matrix's own output (algorithms.md 5).

Deliberate deviations from the reference code, all stated in the docs: weights are fitted by a
ridge solve rather than an explicit pseudo-inverse; all solves stay in float32 (the reference
casts inverses to float16); the reference's plain-SparseGPT blocks 1, 30 and 31 (of a 32-block
model) become an option stated by depth (`plain_blocks="edges"`: the second and the last two),
off by default; the gradient step on s is safeguarded (capped by its curvature and kept only
where it lowers the objective), because the reference's fixed step diverges where the FFN has
massive activations (`s_step="reference"` restores it).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F

from ...errors import PrunekitError
from ...solvers import sparsellm as S
from ..base import LayerwiseMethod
from .sparsegpt import SparseGPTConfig, collect_hessians, obs_logged, prune_linear_obs

# the reference code's penalties per FFN form
DEFAULT_PENALTY = {"llama": 5.0, "opt": 0.1}


@dataclass
class SparseLLMConfig(SparseGPTConfig):
    alpha: float | None = None        # penalty on the pre-activation(s); default per family
    beta: float | None = None         # penalty on the FFN output
    gamma: float | None = None        # penalty on the post-activation
    iterations: int = 4               # outer iterations T (1 = plain SparseGPT)
    ridge: float = 1e-3               # relative ridge of the weight fits
    plain_blocks: str = "none"        # "edges": T=1 on the second and the last two blocks
    s_step: str = "safe"              # "reference": the plain fixed-lr gradient step on s (can diverge)
    method: ClassVar[str] = "sparsellm"

    def __post_init__(self):
        super().__post_init__()
        if self.iterations < 1:
            raise PrunekitError("iterations must be at least 1")
        if self.plain_blocks not in ("none", "edges"):
            raise PrunekitError("plain_blocks is 'none' or 'edges'")
        if self.s_step not in ("safe", "reference"):
            raise PrunekitError("s_step is 'safe' or 'reference'")
        for name in ("alpha", "beta", "gamma"):
            v = getattr(self, name)
            if v is not None and not v > 0:
                raise PrunekitError(f"{name} must be positive")


class SparseLLMPruner(LayerwiseMethod):
    def __init__(self, config, adapter):
        super().__init__(config, adapter)
        fam = adapter.family
        d = DEFAULT_PENALTY[fam]
        self.alpha = config.alpha or d
        self.beta = config.beta or d
        self.gamma = config.gamma or d
        self.history = {}            # block index -> relative FFN reconstruction error per iteration
        act = getattr(adapter.model.config, "hidden_act", None) or getattr(adapter.model.config, "activation_function", None)
        expected = "relu" if fam == "opt" else "silu"
        if act not in (expected, "swish" if expected == "silu" else expected):
            raise PrunekitError(f"sparsellm's closed forms assume a {expected} FFN; this model uses {act}")

    def observe(self, index, block):
        lin = self.linears(block)
        hooks = collect_hessians(self, lin)
        hessian_hook = dict(hooks)
        spec = self.adapter.spec
        self.rec = {"X": [], "Y": [], "pre": {n: [] for n in spec.mlp_in}}
        first_in, out_name = spec.mlp_in[0], spec.mlp_out[0]

        def on_in(name):
            def fn(inp, out):
                if name == first_in:
                    self.rec["X"].append(inp.reshape(-1, inp.shape[-1]).float())
                self.rec["pre"][name].append(out.reshape(-1, out.shape[-1]).float())
                hessian_hook[lin[name]](inp, out)
            return fn

        def on_out(inp, out):
            self.rec["Y"].append(out.reshape(-1, out.shape[-1]).float())
            hessian_hook[lin[out_name]](inp, out)

        for name in spec.mlp_in:
            hooks[lin[name]] = on_in(name)
        hooks[lin[out_name]] = on_out
        return hooks

    def iterations_for(self, index: int) -> int:
        n = self.adapter.num_layers
        if self.config.plain_blocks == "edges" and index in (1, n - 2, n - 1):
            return 1
        return self.config.iterations

    def edit(self, index, block):
        spec = self.adapter.spec
        lin = self.linears(block)
        for name in spec.attn_in + spec.attn_out:
            prune_linear_obs(self, index, name, lin[name], self.hessians[name].H, self.config)
        X = torch.cat(self.rec["X"])
        Y = torch.cat(self.rec["Y"])
        pre = {n: torch.cat(v) for n, v in self.rec["pre"].items()}
        self.rec = None
        H_in = self.hessians[spec.mlp_in[0]].H
        H_out0 = self.hessians[spec.mlp_out[0]].H
        if self.adapter.family == "opt":
            weights, errs = self._relu_ffn(index, lin, X, Y, pre["fc1"], H_in, H_out0)
        else:
            weights, errs = self._swiglu_ffn(index, lin, X, Y, pre, H_in, H_out0)
        for name, W in weights.items():
            lin[name].weight.copy_(W.to(lin[name].weight.dtype))
        self.history[index] = errs
        self.hessians = {}

    def _prune(self, index, name, W, H):
        return obs_logged(self, index, name, W, H, self.config)

    @staticmethod
    def _bias(linear, like):
        return linear.bias.float() if linear.bias is not None else torch.zeros(like, device=linear.weight.device)

    def _swiglu_ffn(self, index, lin, X, Y, pre, H_in, H_out0):
        gate, up, down = (lin[n] for n in ("mlp.gate_proj", "mlp.up_proj", "mlp.down_proj"))
        bg, bu, bd = self._bias(gate, gate.out_features), self._bias(up, up.out_features), self._bias(down, down.out_features)
        a, b, g = self.alpha, self.beta, self.gamma
        s, z = pre["mlp.gate_proj"], pre["mlp.up_proj"]
        p = F.silu(s) * z
        Wg, Wu, Wd = gate.weight.float(), up.weight.float(), down.weight.float()
        errs = []
        T = self.iterations_for(index)
        for t in range(T):
            if t > 0:
                Wu = S.ridge_fit(X, z - bu, self.config.ridge)
                Wg = S.ridge_fit(X, s - bg, self.config.ridge)
                Wd = S.ridge_fit(p, Y - bd, self.config.ridge)
            H_p = H_out0 if t == 0 else S.hessian_of(p)
            Wg = self._prune(index, "mlp.gate_proj", Wg, H_in)
            Wu = self._prune(index, "mlp.up_proj", Wu, H_in)
            Wd = self._prune(index, "mlp.down_proj", Wd, H_p)
            m_g, m_u = X @ Wg.T + bg, X @ Wu.T + bu
            errs.append(S.relative_error(Y, (F.silu(m_g) * m_u) @ Wd.T + bd))
            if t == T - 1:
                break
            p = S.update_p(Wd, Y - bd, F.silu(s) * z, b, g)
            z = S.update_z_swiglu(p, m_u, s, a, g)
            s = S.update_s_swiglu(s, m_g, z, p, a, g, safeguard=self.config.s_step == "safe")
        return {"mlp.gate_proj": Wg, "mlp.up_proj": Wu, "mlp.down_proj": Wd}, errs

    def _relu_ffn(self, index, lin, X, Y, z, H_in, H_out0):
        fc1, fc2 = lin["fc1"], lin["fc2"]
        b1, b2 = self._bias(fc1, fc1.out_features), self._bias(fc2, fc2.out_features)
        a, b, g = self.alpha, self.beta, self.gamma
        p = F.relu(z)
        W1, W2 = fc1.weight.float(), fc2.weight.float()
        errs = []
        T = self.iterations_for(index)
        for t in range(T):
            if t > 0:
                W1 = S.ridge_fit(X, z - b1, self.config.ridge)
                W2 = S.ridge_fit(p, Y - b2, self.config.ridge)
            H_p = H_out0 if t == 0 else S.hessian_of(p)
            W1 = self._prune(index, "fc1", W1, H_in)
            W2 = self._prune(index, "fc2", W2, H_p)
            m = X @ W1.T + b1
            errs.append(S.relative_error(Y, F.relu(m) @ W2.T + b2))
            if t == T - 1:
                break
            p = S.update_p(W2, Y - b2, F.relu(z), b, g)
            z = S.update_z_relu(p, m, a, g)
        return {"fc1": W1, "fc2": W2}, errs

    def summary(self) -> dict:
        return {"cholesky_retries": getattr(self, "cholesky_retries", 0),
                "penalties": {"alpha": self.alpha, "beta": self.beta, "gamma": self.gamma},
                "ffn_relative_error": {str(k): v for k, v in self.history.items()}}
