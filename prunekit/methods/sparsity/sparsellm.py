"""SparseLLM (Bai et al. 2024, "SparseLLM: Towards Global Pruning of Pre-trained Language Models",
NeurIPS 2024, arXiv 2402.17946): attention pruned locally with SparseGPT; each FFN pruned jointly
through auxiliary activations, alternating least-squares weight fits, SparseGPT re-pruning and
the closed-form / gradient updates of solvers/sparsellm.py, so the pruned FFN fits the dense FFN
output rather than each matrix's own output (docs/methods.md).

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
from pathlib import Path

import torch
import torch.nn.functional as F

from ...errors import PrunekitError
from ...models.adapter import penalty_default_text
from ...solvers import sparsellm as S
from ..options import option, require
from ..registry import register_method
from .base import LayerwiseMethod
from .sparsegpt import SparseGPTConfig, collect_hessians, obs_logged, prune_linear_obs

# the activations each FFN form's closed forms are derived for
ACTIVATIONS = {"gated": tuple(S.GATED_ACTIVATIONS), "plain": ("relu",)}


@dataclass
class SparseLLMConfig(SparseGPTConfig):
    alpha: float | None = option(None, "penalty on the FFN pre-activation(s)", default_text=penalty_default_text())
    beta: float | None = option(None, "penalty on the FFN output", default_text="as alpha")
    gamma: float | None = option(None, "penalty on the post-activation", default_text="as alpha")
    iterations: int = option(4, "outer iterations T (1 = SparseGPT)")
    ridge: float = option(1e-3, "relative ridge of the weight fits")
    plain_blocks: str = option(
        "none", "'edges' runs one iteration (plain SparseGPT) on the second and last two blocks, the reference "
                "code's rule for 32-block models stated by depth", choices=("none", "edges"))
    s_step: str = option(
        "safe", "gradient step on the gate pre-activation: 'safe' (capped by curvature, kept only where it lowers "
                "the objective) or 'reference' (plain lr 0.01, diverges on massive activations)",
        choices=("safe", "reference"))

    def __post_init__(self):
        super().__post_init__()
        require(self.iterations >= 1, "{iterations} must be at least 1")
        require(self.plain_blocks in ("none", "edges"), "{plain_blocks} is 'none' or 'edges'")
        require(self.s_step in ("safe", "reference"), "{s_step} is 'safe' or 'reference'")
        for name in ("alpha", "beta", "gamma"):
            v = getattr(self, name)
            require(v is None or v > 0, f"{{{name}}} must be positive")


@register_method("sparsellm", SparseLLMConfig)
class SparseLLMPruner(LayerwiseMethod):
    @classmethod
    def example_config(cls):
        """Small settings for the tests' tiny models (5 blocks, calibration 4 x 16 tokens)."""
        return SparseLLMConfig(sparsity=0.5, iterations=2)

    carried = LayerwiseMethod.carried + ("cholesky_retries", "history")

    def __init__(self, config, adapter):
        super().__init__(config, adapter)
        ffn, act = adapter.spec.ffn, adapter.activation
        if act not in ACTIVATIONS[ffn]:
            raise PrunekitError(f"sparsellm's closed forms assume a {' or '.join(ACTIVATIONS[ffn])} FFN; "
                                f"this {adapter.family} model uses {act}")
        d = adapter.spec.defaults["sparsellm_penalty"]
        self.alpha = config.alpha or d
        self.beta = config.beta or d
        self.gamma = config.gamma or d
        self.history = {}            # block index -> relative FFN reconstruction error per iteration

    def observe(self, index, block):
        lin = self.linears(block)
        hooks = collect_hessians(self, lin)
        hessian_hook = dict(hooks)
        spec = self.adapter.spec
        first_in, out_name = spec.mlp_in[0], spec.mlp_out[0]
        if out_name not in lin:         # a block that kept attention alone: OBS on it, no FFN solve
            self.rec = None
            return hooks
        self.rec = {"X": [], "Y": [], "pre": {n: [] for n in spec.mlp_in}}

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
            if name in lin:             # a block without attention (a removed sublayer) has none
                prune_linear_obs(self, index, name, lin[name], self.hessians[name].H, self.config)
        if self.rec is None:
            self.hessians = {}
            return
        X = torch.cat(self.rec["X"])
        Y = torch.cat(self.rec["Y"])
        pre = {n: torch.cat(v) for n, v in self.rec["pre"].items()}
        self.rec = None
        H_in = self.hessians[spec.mlp_in[0]].H
        H_out0 = self.hessians[spec.mlp_out[0]].H
        if self.adapter.spec.ffn == "plain":
            weights, errs = self._relu_ffn(index, lin, X, Y, pre, H_in, H_out0)
        else:
            weights, errs = self._swiglu_ffn(index, lin, X, Y, pre, H_in, H_out0)
        for (name, rows), W in weights:     # a fused matrix gets each part's rows back
            lin[name].weight[rows] = W.to(lin[name].weight.dtype)
        self.history[index] = errs
        self.hessians = {}

    def _prune(self, index, name, W, H):
        return obs_logged(self, index, name, W, H, self.config)

    def _parts(self, lin, pre, roles):
        """Per FFN role, seen through the adapter (a fused gate/up matrix as its two parts):
        (linear name, rows), weight, bias (zeros if none) and pre-activation (None for the output
        linear), all float32."""
        out = []
        for role in roles:
            name, rows = self.adapter.role_rows(role)
            linear = lin[name]
            W = linear.weight[rows].float()
            bias = linear.bias[rows].float() if linear.bias is not None else torch.zeros(W.shape[0], device=W.device)
            out.append(((name, rows), W, bias, pre[name][:, rows] if name in pre else None))
        return out

    def _swiglu_ffn(self, index, lin, X, Y, pre, H_in, H_out0):
        (kg, Wg, bg, s), (ku, Wu, bu, z), (kd, Wd, bd, _) = self._parts(lin, pre, ("gate", "up", "down"))
        names = [kg[0], ku[0], kd[0]]
        a, b, g = self.alpha, self.beta, self.gamma
        act, act_grad = S.GATED_ACTIVATIONS[self.adapter.activation]
        p = act(s) * z
        errs = []
        T = self.iterations_for(index)
        for t in range(T):
            if t > 0:
                Wu = S.ridge_fit(X, z - bu, self.config.ridge)
                Wg = S.ridge_fit(X, s - bg, self.config.ridge)
                Wd = S.ridge_fit(p, Y - bd, self.config.ridge)
            H_p = H_out0 if t == 0 else S.hessian_of(p)
            if kg[0] == ku[0]:   # one fused matrix: pruned as a whole, as SparseGPT prunes it
                Wg, Wu = self._prune(index, kg[0], torch.cat([Wg, Wu]), H_in).split([Wg.shape[0], Wu.shape[0]])
            else:
                Wg = self._prune(index, names[0], Wg, H_in)
                Wu = self._prune(index, names[1], Wu, H_in)
            Wd = self._prune(index, names[2], Wd, H_p)
            m_g, m_u = X @ Wg.T + bg, X @ Wu.T + bu
            errs.append(S.relative_error(Y, (act(m_g) * m_u) @ Wd.T + bd))
            if t == T - 1:
                break
            p = S.update_p(Wd, Y - bd, act(s) * z, b, g)
            z = S.update_z_swiglu(p, m_u, s, a, g, act)
            s = S.update_s_swiglu(s, m_g, z, p, a, g, safeguard=self.config.s_step == "safe", act=act, act_grad=act_grad)
        return list(zip((kg, ku, kd), (Wg, Wu, Wd))), errs

    def _relu_ffn(self, index, lin, X, Y, pre, H_in, H_out0):
        (k1, W1, b1, z), (k2, W2, b2, _) = self._parts(lin, pre, ("up", "down"))
        names = [k1[0], k2[0]]
        a, b, g = self.alpha, self.beta, self.gamma
        p = F.relu(z)
        errs = []
        T = self.iterations_for(index)
        for t in range(T):
            if t > 0:
                W1 = S.ridge_fit(X, z - b1, self.config.ridge)
                W2 = S.ridge_fit(p, Y - b2, self.config.ridge)
            H_p = H_out0 if t == 0 else S.hessian_of(p)
            W1 = self._prune(index, names[0], W1, H_in)
            W2 = self._prune(index, names[1], W2, H_p)
            m = X @ W1.T + b1
            errs.append(S.relative_error(Y, F.relu(m) @ W2.T + b2))
            if t == T - 1:
                break
            p = S.update_p(W2, Y - b2, F.relu(z), b, g)
            z = S.update_z_relu(p, m, a, g)
        return list(zip((k1, k2), (W1, W2))), errs

    def summary(self) -> dict:
        return {"cholesky_retries": getattr(self, "cholesky_retries", 0),
                "penalties": {"alpha": self.alpha, "beta": self.beta, "gamma": self.gamma},
                "ffn_relative_error": {str(k): v for k, v in self.history.items()}}

    @classmethod
    def summary_lines(cls, report: dict) -> list[str]:
        lines = super().summary_lines(report)
        hist = report["method"].get("ffn_relative_error")
        if hist:
            first = sum(v[0] for v in hist.values()) / len(hist)
            last = sum(v[-1] for v in hist.values()) / len(hist)
            lines.insert(1, f"  FFN error     mean relative error {first:.4g} after iteration 1 -> {last:.4g} after the last")
        return lines

    @classmethod
    def figures(cls, report: dict, folder: Path) -> list[str]:
        from ...plots import plot_convergence
        meth = report["method"]
        if not meth.get("ffn_relative_error"):
            return []
        cfg = meth["config"]
        what = cfg["pattern"] or f"{cfg['sparsity']:.0%}"
        plot_convergence(meth["ffn_relative_error"], Path(folder) / "sparsellm_convergence.png",
                         f"SparseLLM FFN convergence, {report['model']['source']}, {what}")
        return ["sparsellm_convergence.png"]
