"""What prunekit knows about each architecture, as data, and the structural view built on it.

The one place that knows module names and config keys. A family description says where the
blocks, norms and linears are, what role each linear plays (q, k, v, o, gate, up, down; several
roles in one matrix for fused projections), the FFN form and its activation, per-head q/k norms,
the config keys that hold widths, per-family defaults of the methods, and which modeling code a
per-layer-width model needs. Methods and the engine ask the adapter; they never spell
`model.model.layers` or `mlp.down_proj`, nor test a family's name. A model whose `model_type` is
not described is refused before any work.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import torch.nn as nn

from ..errors import PrunekitError


@dataclass(frozen=True, eq=False)
class FamilySpec:
    name: str
    model_types: tuple          # config.model_type values described by this entry
    layers_path: str            # attribute path from the CausalLM to the ModuleList of blocks
    pre_block_paths: tuple      # modules run before block 0 (embeddings, rotary, positions)
    post_block_paths: tuple     # modules run after the last block (final norm, projection, head)
    attn_in: tuple              # linears that read the attention input
    attn_out: tuple             # linear that writes the attention output
    mlp_in: tuple               # linears that read the MLP input
    mlp_out: tuple              # linear that writes the MLP output
    norms: tuple                # per-block norm modules
    roles: dict                 # role (q, k, v, o, gate, up, down) -> linear name inside a block (unfused roles;
                                # a fused matrix's roles are in `fused`, their rows from ModelAdapter.role_rows)
    ffn: str                    # "gated": down(act(gate) * up); "plain": down(act(up))
    activation_key: str         # config key naming the FFN activation
    dims: dict                  # width -> config key: hidden, heads, kv_heads, head_dim, mlp
    rotary: bool                # rotary position embeddings (attention dims come in pairs)
    variable_width: str | None  # modeling code for per-layer widths ("llama", "opt"), None: none yet
    fused: dict = field(default_factory=dict)      # fused linear name -> the roles it stacks, in row order
    qk_norms: tuple = ()        # per-head norms applied to q and k
    defaults: dict = field(default_factory=dict)   # per-family defaults of method options
    logit_softcap_key: str | None = None    # config key of a cap the model's forward applies to the logits


LLAMA = FamilySpec(
    name="llama",
    model_types=("llama", "mistral", "qwen2", "prunekit_llama", "nemotron-nas"),
    layers_path="model.layers",
    pre_block_paths=("model.embed_tokens", "model.rotary_emb"),
    post_block_paths=("model.norm", "lm_head"),
    attn_in=("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"),
    attn_out=("self_attn.o_proj",),
    mlp_in=("mlp.gate_proj", "mlp.up_proj"),
    mlp_out=("mlp.down_proj",),
    norms=("input_layernorm", "post_attention_layernorm"),
    roles={"q": "self_attn.q_proj", "k": "self_attn.k_proj", "v": "self_attn.v_proj", "o": "self_attn.o_proj",
           "gate": "mlp.gate_proj", "up": "mlp.up_proj", "down": "mlp.down_proj"},
    ffn="gated",
    activation_key="hidden_act",
    dims={"hidden": "hidden_size", "heads": "num_attention_heads", "kv_heads": "num_key_value_heads",
          "head_dim": "head_dim", "mlp": "intermediate_size"},
    rotary=True,
    variable_width="llama",
    defaults={"sparsellm_penalty": 5.0},    # the SparseLLM reference code's, for gated FFNs
)

QWEN3 = dataclasses.replace(LLAMA, name="qwen3", model_types=("qwen3",), qk_norms=("self_attn.q_norm", "self_attn.k_norm"))

OPT = FamilySpec(
    name="opt",
    model_types=("opt", "prunekit_opt"),
    layers_path="model.decoder.layers",
    pre_block_paths=("model.decoder.embed_tokens", "model.decoder.embed_positions", "model.decoder.project_in"),
    post_block_paths=("model.decoder.final_layer_norm", "model.decoder.project_out", "lm_head"),
    attn_in=("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"),
    attn_out=("self_attn.out_proj",),
    mlp_in=("fc1",),
    mlp_out=("fc2",),
    norms=("self_attn_layer_norm", "final_layer_norm"),
    roles={"q": "self_attn.q_proj", "k": "self_attn.k_proj", "v": "self_attn.v_proj", "o": "self_attn.out_proj",
           "up": "fc1", "down": "fc2"},
    ffn="plain",
    activation_key="activation_function",
    dims={"hidden": "hidden_size", "heads": "num_attention_heads", "kv_heads": "num_attention_heads",
          "head_dim": None, "mlp": "ffn_dim"},
    rotary=False,
    variable_width="opt",
    defaults={"sparsellm_penalty": 0.1},    # the SparseLLM reference code's, for ReLU FFNs
)

# Gemma 2 (Gemma Team 2024, arXiv 2408.00118) and Gemma 3 (arXiv 2503.19786): four norms per block
# computing with (1 + w), GeGLU, embeddings scaled by sqrt(hidden) (inside the embedding module in
# transformers 5; either way the engine records block 0's input from the model's own forward);
# Gemma 2's forward (not lm_head) soft-caps the final logits.
GEMMA2 = dataclasses.replace(
    LLAMA, name="gemma2", model_types=("gemma2",),
    norms=("input_layernorm", "post_attention_layernorm", "pre_feedforward_layernorm", "post_feedforward_layernorm"),
    activation_key="hidden_activation", variable_width=None,
    defaults={"sparsellm_penalty": 5.0},    # the reference's gated-FFN value; it gives none for GeGLU
    logit_softcap_key="final_logit_softcapping")

GEMMA3 = dataclasses.replace(GEMMA2, name="gemma3", model_types=("gemma3_text",),
                             qk_norms=("self_attn.q_norm", "self_attn.k_norm"))

# Phi-3 (Abdin et al. 2024, arXiv 2404.14219): q, k, v in one matrix and gate, up in another
PHI3 = dataclasses.replace(
    LLAMA, name="phi3", model_types=("phi3",),
    attn_in=("self_attn.qkv_proj",), mlp_in=("mlp.gate_up_proj",),
    roles={"o": "self_attn.o_proj", "down": "mlp.down_proj"},
    fused={"self_attn.qkv_proj": ("q", "k", "v"), "mlp.gate_up_proj": ("gate", "up")})

# a block's two sublayers, by the role of the linear that writes each one's output: a sublayer whose
# output projection outputs zeros adds nothing to the residual stream (in Gemma's sandwich norms too,
# since the post-norm of zeros is zeros), which is what removing it means
SUBLAYERS = {"attention": "o", "mlp": "down"}

FAMILIES = (LLAMA, QWEN3, GEMMA2, GEMMA3, PHI3, OPT)
SUPPORTED_MODEL_TYPES = tuple(t for f in FAMILIES for t in f.model_types if not t.startswith("prunekit"))


def penalty_default_text() -> str:
    """How SparseLLM's penalties default, stated from the family table (for --help)."""
    return "per family: " + ", ".join(f"{f.name} {f.defaults['sparsellm_penalty']:g}" for f in FAMILIES
                                      if "sparsellm_penalty" in f.defaults)


def get_path(root: nn.Module, path: str):
    obj = root
    for part in path.split("."):
        obj = getattr(obj, part, None)
        if obj is None:
            return None
    return obj


def family_of(model: nn.Module) -> FamilySpec:
    model_type = getattr(getattr(model, "config", None), "model_type", None)
    for spec in FAMILIES:
        if model_type in spec.model_types:
            return spec
    arch = getattr(getattr(model, "config", None), "architectures", None) or [type(model).__name__]
    raise PrunekitError(f"unsupported model_type {model_type}: prunekit supports {', '.join(SUPPORTED_MODEL_TYPES)} "
                        f"(this model is a {arch[0]})")


class ModelAdapter:
    """Structural view of a supported causal LM."""

    def __init__(self, model: nn.Module):
        self.model = model
        self.spec = family_of(model)
        layers = get_path(model, self.spec.layers_path)
        if not isinstance(layers, nn.ModuleList):
            raise PrunekitError(f"{type(model).__name__} has no decoder blocks at {self.spec.layers_path}")

    @property
    def family(self) -> str:
        return self.spec.name

    @property
    def config(self):
        return self.model.config

    @property
    def layers(self) -> nn.ModuleList:
        return get_path(self.model, self.spec.layers_path)

    @property
    def num_layers(self) -> int:
        return len(self.layers)

    @property
    def decoder(self) -> nn.Module:
        """The module whose forward runs the blocks (LlamaModel, OPTDecoder)."""
        return get_path(self.model, self.spec.layers_path.rsplit(".", 1)[0])

    def replace_layers(self, blocks: list[nn.Module]) -> None:
        """Make the decoder's block list exactly `blocks` (the same ModuleList object)."""
        layers = self.layers
        while len(layers):
            del layers[len(layers) - 1]
        for block in blocks:
            layers.append(block)

    # ---- what the config says
    @property
    def activation(self) -> str | None:
        return getattr(self.config, self.spec.activation_key, None)

    def dim(self, name: str) -> int:
        """A width of the dense model: hidden, heads, kv_heads, head_dim, mlp."""
        key = self.spec.dims[name]
        value = getattr(self.config, key, None) if key else None
        if name == "head_dim" and not value:
            value = self.dim("hidden") // self.dim("heads")
        return value

    @property
    def sliding_window(self) -> int | None:
        return getattr(self.config, "sliding_window", None)

    @property
    def layer_types(self) -> list[str]:
        """Each block's attention kind: the config's `layer_types` where it has them, otherwise
        every block sliding (a config-wide window, as Mistral's) or full."""
        types = getattr(self.config, "layer_types", None)
        if types:
            return list(types)
        kind = "sliding_attention" if self.sliding_window else "full_attention"
        return [kind] * self.num_layers

    @property
    def logit_softcap(self) -> float | None:
        key = self.spec.logit_softcap_key
        return getattr(self.config, key, None) if key else None

    def cap_logits(self, logits):
        """What the model's forward does to lm_head's output: cap * tanh(logits / cap) where
        the family soft-caps its logits, nothing otherwise."""
        cap = self.logit_softcap
        return logits if cap is None else cap * (logits / cap).tanh()

    def require(self, what: str, ok: bool, method: str) -> None:
        """Refuse, in one line naming the method and the family, what a method cannot handle."""
        if not ok:
            raise PrunekitError(f"method {method} does not support {self.config.model_type} models: {what}")

    # ---- modules
    def pre_block_modules(self) -> list[nn.Module]:
        mods = (get_path(self.model, p) for p in self.spec.pre_block_paths)
        return [m for m in mods if m is not None]

    def post_block_modules(self) -> list[nn.Module]:
        mods = (get_path(self.model, p) for p in self.spec.post_block_paths)
        return [m for m in mods if m is not None]

    def final_modules(self) -> list[nn.Module]:
        """The post-block modules except the LM head: what turns the last block's output into
        the final hidden state (HF's hidden_states[-1], after the final norm)."""
        head = get_path(self.model, self.spec.post_block_paths[-1])
        return [m for m in self.post_block_modules() if m is not head]

    def linear_names(self) -> tuple:
        s = self.spec
        return s.attn_in + s.attn_out + s.mlp_in + s.mlp_out

    def role(self, block: nn.Module, role: str) -> nn.Linear:
        """The linear computing `role` (for a fused role: the whole fused matrix)."""
        return get_path(block, self.role_rows(role)[0])

    @property
    def ffn_in_roles(self) -> tuple:
        """The FFN's input roles: gate and up (gated), up (plain)."""
        return ("gate", "up") if self.spec.ffn == "gated" else ("up",)

    @property
    def partial_rotary(self) -> bool:
        """Rotary embeddings on only part of each head (Phi-3's `partial_rotary_factor` < 1)."""
        return getattr(self.config, "partial_rotary_factor", None) not in (None, 1.0)

    def role_rows(self, role: str) -> tuple[str, slice]:
        """(linear name inside a block, its rows that compute `role`): all rows of an unfused
        linear, the role's share of a fused one (its parts stacked in row order)."""
        if role in self.spec.roles:
            return self.spec.roles[role], slice(None)
        hd = self.dim("head_dim")
        sizes = {"q": self.dim("heads") * hd, "k": self.dim("kv_heads") * hd, "v": self.dim("kv_heads") * hd,
                 "gate": self.dim("mlp"), "up": self.dim("mlp")}
        for name, parts in self.spec.fused.items():
            if role in parts:
                start = sum(sizes[p] for p in parts[:parts.index(role)])
                return name, slice(start, start + sizes[role])
        raise PrunekitError(f"{self.config.model_type} models have no {role} projection")

    def sublayers(self, block: nn.Module) -> tuple[str, ...]:
        """The sublayers `block` still has ("attention", "mlp"): a removed one has no output projection."""
        return tuple(part for part, role in SUBLAYERS.items() if get_path(block, self.role_rows(role)[0]) is not None)

    def sublayer_linears(self, block: nn.Module, part: str) -> list[nn.Linear]:
        """The linears of one sublayer of `block` (attention: q, k, v, o; mlp: gate, up, down)."""
        s = self.spec
        names = s.attn_in + s.attn_out if part == "attention" else s.mlp_in + s.mlp_out
        return [lin for lin in (get_path(block, n) for n in names) if lin is not None]

    def sublayer_prefixes(self, part: str) -> tuple[str, ...]:
        """Names inside a block of what belongs to one sublayer: the module holding its linears
        and its pre-norm (pre-norm families with two norms per block)."""
        if len(self.spec.norms) != 2:
            raise PrunekitError(f"{self.config.model_type} blocks have {len(self.spec.norms)} norms: "
                                f"their sublayers are not stored apart")
        role, norm = (self.spec.roles["o"], self.spec.norms[0]) if part == "attention" else \
            (self.spec.roles["down"], self.spec.norms[1])
        return role.rsplit(".", 1)[0] + ".", norm + "."

    def block_linears(self, block: nn.Module) -> dict[str, nn.Linear]:
        """The prunable linears of one block, in forward order, by their name inside the block."""
        linears = {name: get_path(block, name) for name in self.linear_names()}
        return {name: lin for name, lin in linears.items() if lin is not None}   # a removed sublayer has none

    def linear_copies(self, block: nn.Module) -> dict[str, tuple]:
        """{name: (weight, bias or None)}: detached copies of the block's prunable linears, to write
        back or to derive variants from."""
        return {n: (lin.weight.detach().clone(), None if lin.bias is None else lin.bias.detach().clone())
                for n, lin in self.block_linears(block).items()}

    def all_linears(self, blocks=None):
        """(qualified name, linear) for every prunable linear of every block (or of `blocks`)."""
        for i, block in enumerate(self.layers):
            if blocks is not None and i not in blocks:
                continue
            for name, lin in self.block_linears(block).items():
                yield f"layers.{i}.{name}", lin
