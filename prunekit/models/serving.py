"""Which serving engines can load an output, read from its saved config the way the engines read
it (vLLM's DeciLMForCausalLM and llama.cpp's DECI converter and graph; docs/serving.md says
what each reads). Every summary and report carries the answer in one line."""
from __future__ import annotations

# model types the engines load with their own class of the same architecture (vLLM's model registry;
# llama.cpp's converter registers no OPT class)
STANDARD = {"llama", "mistral", "qwen2", "qwen3", "gemma2", "gemma3_text", "phi3", "opt"}
LLAMACPP_STANDARD = STANDARD - {"opt"}
PRUNEKIT_LAYOUTS = {"prunekit_llama", "prunekit_opt"}
DECILM = "nemotron-nas"
FFN_GRID = 256


def engine_ffn_width(ffn, hidden: int) -> int:
    """An ffn entry's width as both engines derive it: ffn_mult when the entry has the key,
    int(2·m·hidden/3) rounded up to the grid; otherwise intermediate_size; 0 for a no-op."""
    if ffn["no_op"]:
        return 0
    if "ffn_mult" in ffn:
        return -(-int(2 * ffn["ffn_mult"] * hidden / 3) // FFN_GRID) * FFN_GRID
    return ffn["intermediate_size"]


def decilm_blocks(config: dict) -> list[tuple[int, int]]:
    """(KV heads, MLP width) of every block of a DeciLM config; 0 for a no-op part."""
    heads, hidden = config["num_attention_heads"], config["hidden_size"]
    out = []
    for block in config["block_configs"]:
        att = block["attention"]
        out.append((0 if att["no_op"] else heads // att["n_heads_in_group"], engine_ffn_width(block["ffn"], hidden)))
    return out


def llamacpp_obstacles(config: dict) -> list[str]:
    """Why llama.cpp's converter or its DECI graph would not reproduce a DeciLM config's model."""
    blocks = decilm_blocks(config)
    off_grid = [i for i, b in enumerate(config["block_configs"])
                if not b["ffn"]["no_op"] and "ffn_mult" not in b["ffn"]]
    attention_only = [i for i, (kv, mlp) in enumerate(blocks) if kv and not mlp]
    why = []
    if off_grid:
        why.append(f"MLP widths off its 256 grid in blocks {off_grid}")
    if attention_only:
        why.append(f"blocks {attention_only} keep attention without an MLP (its graph skips such a block)")
    if blocks and blocks[0][0] == 0:
        why.append("block 0 has no attention (it reads the head size there)")
    return why


def servable(config: dict, sparsity: float = 0.0) -> dict:
    """{"layout", "engines", "notes"} for a saved config (a dict)."""
    model_type = config.get("model_type")
    arch = (config.get("architectures") or [model_type])[0]
    notes = []
    if sparsity >= 0.05:
        notes.append("zeros are stored dense: no serving engine runs them faster")
    if model_type in STANDARD:
        engines = ["vLLM", "llama.cpp", "transformers"] if model_type in LLAMACPP_STANDARD else ["vLLM", "transformers"]
        return {"layout": f"standard {arch}", "engines": engines, "notes": notes}
    if model_type == DECILM:
        engines = ["vLLM (DeciLMForCausalLM)", "transformers (trust_remote_code)"]
        obstacles = llamacpp_obstacles(config)
        if obstacles:
            notes.append("not llama.cpp: " + "; ".join(obstacles)
                         + " (prunekit export --for llama.cpp pads them exactly)")
        else:
            engines.insert(1, "llama.cpp (DECI)")
        return {"layout": "Nemotron-NAS (DeciLM)", "engines": engines, "notes": notes}
    if model_type in PRUNEKIT_LAYOUTS:
        notes.insert(0, "within-head widths or this family's per-block widths are a layout no serving engine reads")
        return {"layout": "prunekit", "engines": ["transformers (trust_remote_code)"], "notes": notes}
    return {"layout": arch, "engines": [], "notes": notes}


def serving_line(serving: dict) -> str:
    line = f"{', '.join(serving['engines']) or 'none known'} [{serving['layout']} layout]"
    return line + ("; " + "; ".join(serving["notes"]) if serving["notes"] else "")
