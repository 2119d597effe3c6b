"""Re-express a Llama-family HF folder as a DeciLM / Nemotron-NAS folder (probe).

    /work/main/.venv/bin/python benchmarks/serving/make_deci.py SRC_DIR OUT_DIR \
        [--noop 12,13,14] [--ffn-key auto|ffn_mult|intermediate_size]

Purpose: check what the serving engines' DeciLM paths accept before prunekit
writes such configs itself.  The output folder holds

* ``config.json`` with ``architectures: ["DeciLMForCausalLM"]``,
  ``model_type: "nemotron-nas"``, one ``block_configs`` entry per layer and an
  ``auto_map`` pointing at the bundled ``configuration_decilm.py``;
* ``configuration_decilm.py``: prunekit's own config class (the one its
  outputs ship: ``block_configs`` entries allow attribute access, which vLLM's
  nemotron_nas model needs, and neither transformers nor vLLM ship a config
  class for ``nemotron-nas``);
* ``model.safetensors`` with the source weights, minus every tensor of the
  layers listed in ``--noop`` (those become attention+FFN no-op blocks), and
  the tokenizer files.

With ``--noop`` set to the layers a depth-pruned model removed, the result
computes the same function as that pruned model, so greedy tokens and logits
can be compared against transformers on the pruned Llama folder.

``--ffn-key``: ``ffn_mult`` writes only ``ffn_mult`` (vLLM and llama.cpp turn it
into a width with int(2*m*hidden/3) rounded up to a multiple of 256);
``intermediate_size`` writes only the exact width (vLLM uses it when
``ffn_mult`` is absent; llama.cpp's converter cannot); ``auto`` writes
``ffn_mult`` when that round trip reproduces the width exactly, otherwise
``intermediate_size``.
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path



def ffn_mult_to_width(mult: float, hidden: int) -> int:
    width = int(2 * mult * hidden / 3)
    return width if width % 256 == 0 else width + 256 - width % 256


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("src")
    ap.add_argument("out")
    ap.add_argument("--noop", default="", help="comma-separated layer indices made attention+FFN no-op")
    ap.add_argument("--ffn-noop", default="",
                    help="comma-separated layer indices whose FFN only is no-op (attention kept)")
    ap.add_argument("--ffn-key", default="auto", choices=["auto", "ffn_mult", "intermediate_size"])
    ap.add_argument("--reference-out", default=None,
                    help="also write a plain Llama folder computing the same function "
                         "(o_proj/down_proj zeroed in the no-op parts) for transformers")
    args = ap.parse_args()

    from safetensors.torch import load_file, save_file

    src, out = Path(args.src), Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    cfg = json.loads((src / "config.json").read_text())
    n_layers, hidden = cfg["num_hidden_layers"], cfg["hidden_size"]
    n_heads = cfg["num_attention_heads"]
    n_kv = cfg.get("num_key_value_heads") or n_heads
    width = cfg["intermediate_size"]
    noop = {int(x) for x in args.noop.split(",") if x.strip()}
    ffn_noop = {int(x) for x in args.ffn_noop.split(",") if x.strip()} - noop

    mult = round(1.5 * width / hidden, 6)
    exact = ffn_mult_to_width(mult, hidden) == width
    key = args.ffn_key if args.ffn_key != "auto" else ("ffn_mult" if exact else "intermediate_size")

    blocks = []
    for i in range(n_layers):
        if i in noop:
            blocks.append({"attention": {"no_op": True, "replace_with_linear": False, "n_heads_in_group": None},
                           "ffn": {"no_op": True, "replace_with_linear": False, "ffn_mult": None}})
            continue
        if i in ffn_noop:
            ffn = {"no_op": True, "replace_with_linear": False, "ffn_mult": None}
        else:
            ffn = {"no_op": False, "replace_with_linear": False}
            ffn["ffn_mult" if key == "ffn_mult" else "intermediate_size"] = mult if key == "ffn_mult" else width
        blocks.append({"attention": {"no_op": False, "replace_with_linear": False,
                                     "n_heads_in_group": n_heads // n_kv},
                       "ffn": ffn})

    cfg.update({
        "architectures": ["DeciLMForCausalLM"],
        "model_type": "nemotron-nas",
        "auto_map": {"AutoConfig": "configuration_decilm.DeciLMConfig"},
        "block_configs": blocks,
    })
    (out / "config.json").write_text(json.dumps(cfg, indent=2) + "\n")
    from prunekit.models import configuration_decilm       # the config class prunekit's outputs ship
    shutil.copy(configuration_decilm.__file__, out / "configuration_decilm.py")

    tensors, reference = {}, {}
    for f in sorted(src.glob("*.safetensors")):
        for name, t in load_file(str(f)).items():
            t = t.contiguous()
            reference[name] = t
            parts = name.split(".")
            layer = int(parts[parts.index("layers") + 1]) if "layers" in parts else None
            if layer in noop:
                if name.endswith(("o_proj.weight", "o_proj.bias", "down_proj.weight", "down_proj.bias")):
                    reference[name] = t.new_zeros(t.shape)
                continue
            if layer in ffn_noop and (".mlp." in name or "post_attention_layernorm" in name):
                if name.endswith(("down_proj.weight", "down_proj.bias")):
                    reference[name] = t.new_zeros(t.shape)
                continue
            tensors[name] = t
    save_file(tensors, str(out / "model.safetensors"), metadata={"format": "pt"})
    extras = [f for f in src.iterdir() if f.name.startswith(
        ("tokenizer", "special_tokens", "generation_config", "chat_template", "vocab", "merges"))]
    for f in extras:
        shutil.copy2(f, out / f.name)
    if args.reference_out:
        ref = Path(args.reference_out)
        ref.mkdir(parents=True, exist_ok=True)
        save_file(reference, str(ref / "model.safetensors"), metadata={"format": "pt"})
        shutil.copy2(src / "config.json", ref / "config.json")
        for f in extras:
            shutil.copy2(f, ref / f.name)
    print(json.dumps({"out": str(out), "layers": n_layers, "noop": sorted(noop), "ffn_noop": sorted(ffn_noop), "ffn_key": key,
                      "ffn_mult": mult, "ffn_mult_exact": exact, "tensors": len(tensors)}))


if __name__ == "__main__":
    main()
