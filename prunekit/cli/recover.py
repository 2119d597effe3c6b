"""`prunekit recover`: recovery of a pruned model (LoRA or block weights, lm loss or distillation
from the dense teacher, optional local distillation); its option flags are generated from
RecoveryConfig's field metadata and read back through RecoveryConfig.from_dict."""
from __future__ import annotations

from .args import add_config_flags, add_eval_args, add_model_args, config_from_args


def add_parser(sub) -> None:
    from ..recovery.config import RecoveryConfig
    p = sub.add_parser(
        "recover", help="fine-tuning or distillation that recovers a pruned model (zeros stay zeros)",
        description="Recover a pruned model. By default LoRA adapters on the decoder-block linears (the "
                    "Shortened-LLM / SLM recipe: r 8, alpha 16, dropout 0.05, lr 1e-4, AdamW, warm-up) learn the "
                    "next-token loss and are merged into the weights, masked by the weights' zero pattern so that "
                    "sparse and N:M models keep every zero. --loss kd or kd+lm distils the dense teacher's "
                    "next-token distributions instead (the teacher: --teacher, else the dense model the input's "
                    "report starts from); --train full or blocks:LIST trains the block weights themselves (zeros "
                    "kept by masked updates); --local first|only first trains every changed block to reproduce "
                    "the dense blocks it replaces. Saves a checkpoint plus prunekit_report.json (loss history, "
                    "tokens, time, memory, the teacher's share of the time) and recovery_loss.png (with a teacher: "
                    "the KL to it and the top-1 agreement).")
    add_model_args(p)
    p.add_argument("--data", default="c4",
                   help="training text: c4, ptb, wikitext2 (optionally NAME:SPLIT, default split train), a .txt "
                        "file (packed windows) or a .jsonl file, either Alpaca rows (instruction, input, output; "
                        "prompt tokens masked from the loss) or text rows; evaluation sets are refused (default c4)")
    add_config_flags(p, RecoveryConfig, "recovery options")
    add_eval_args(p, "wikitext2")
    p.add_argument("--output", required=True, help="output folder (a Hugging Face checkpoint plus the report)")
    p.add_argument("--overwrite", action="store_true",
                   help="replace a non-empty output folder (and an interrupted run's checkpoints)")


def configs() -> tuple:
    """The config classes whose fields this command's flags set (for naming them in errors)."""
    from ..recovery.config import RecoveryConfig
    return (RecoveryConfig,)


def summary(report: dict) -> str:
    r = report["recovery"]
    cfg, data = r["config"], r["data"]
    val = r["history"]["validation"]
    split = f":{data['split']}" if data.get("split") else ""
    lines = [f"prunekit recover: {report['recovered_from']} ({report['model'].get('architecture', '?')}, "
             f"{report['model'].get('num_layers', '?')} layers)", *_trained_lines(r, cfg),
             f"  data          {data['dataset']}{split} ({data['format']}, {data['train_examples']} train / "
             f"{data['validation_examples']} held-out examples of <= {data['seqlen']} tokens)",
             f"  training      {r['steps']} steps, {r['tokens_seen']:,} tokens, {r['train_s']:.1f} s "
             f"({r['tokens_this_run'] / max(r['train_s'], 1e-9):.0f} tokens/s), peak {r['peak_memory_kind']} "
             f"{r['peak_memory_gb']:.2f} GB" + (f", resumed from {r['resumed_from']}" if r['resumed_from'] else "")]
    if val and "kd" in val[0]:
        lines.append(f"  validation    kd {val[0]['kd']:.4f} -> {val[-1]['kd']:.4f}, top-1 agreement "
                     f"{val[0]['agreement']:.3f} -> {val[-1]['agreement']:.3f}, lm {val[0]['lm']:.4f} -> "
                     f"{val[-1]['lm']:.4f} (step {val[0]['step']} -> {val[-1]['step']})"
                     + (f"; merged model lm {r['validation_loss_merged']:.4f}"
                        if r["validation_loss_merged"] is not None else ""))
    elif val:
        lines.append(f"  validation    loss {val[0]['loss']:.4f} (step {val[0]['step']}) -> {val[-1]['loss']:.4f} "
                     f"(step {val[-1]['step']})" + (f"; merged model {r['validation_loss_merged']:.4f}"
                                                    if r["validation_loss_merged"] is not None else ""))
    sp = report["sparsity"]["overall"]
    lines.append(f"  merge         {r['merge']}; sparsity {r['sparsity_before']:.4f} -> {sp:.4f}"
                 + "".join(f"; {p} valid" for p, v in r["nm_valid"].items() if v["before"] and v["after"])
                 + "".join(f"; {p} LOST" for p, v in r["nm_valid"].items() if v["before"] and not v["after"]))
    for name, ev in (report.get("eval") or {}).items():
        before = ((report.get("before_recovery") or {}).get("eval") or {}).get(name)
        same = before and before.get("protocol") == ev["protocol"]
        note = f", {ev['window_note']}" if ev.get("window_note") else ""
        lines.append(f"  ppl {name:<10s}{ev['ppl']:.3f} [{ev['protocol']}{note}]"
                     + (f"  (before recovery {before['ppl']:.3f})" if same else ""))
    serving = (report.get("model") or {}).get("serving")
    if serving:
        from ..models.serving import serving_line
        lines.append(f"  serves in     {serving_line(serving)}")
    if report.get("output"):
        lines.append(f"  saved         {report['output']}")
    return "\n".join(lines)


def _trained_lines(r: dict, cfg: dict) -> list[str]:
    lines = []
    local = r.get("local")
    if local:
        rows = local["blocks"]
        mean = lambda key: sum(b[key] for b in rows) / max(len(rows), 1)     # noqa: E731
        lines.append(f"  local         {len(rows)} changed blocks, {local['steps_per_block']} steps each on "
                     f"{local['windows']} windows of {local['seqlen']} tokens; mean normalised error "
                     f"{mean('error_before'):.4f} -> {mean('error_after'):.4f}"
                     + (" (reused from the interrupted run)" if local.get("reused") else ""))
    if cfg.get("local") == "only":
        return lines
    if cfg.get("train", "lora") == "lora":
        lines.append(f"  lora          r {cfg['lora_r']} alpha {cfg['lora_alpha']:g} dropout {cfg['lora_dropout']:g} on "
                     f"{len(r['targets'])} linears per block ({r['trainable_params']:,} trainable parameters)")
    else:
        lines.append(f"  train         {cfg['train']}: block weights ({r['trainable_params']:,} trainable parameters)")
    if r.get("teacher") and cfg.get("loss", "lm") != "lm":
        weight = f", kd weight {cfg['kd_weight']:g}" if cfg["loss"] == "kd+lm" else ""
        topk = f", teacher top-{cfg['kd_topk']} + tail" if cfg.get("kd_topk") else ""
        share = f", {r['teacher_share']:.0%} of training" if r.get("teacher_share") is not None else ""
        lines.append(f"  distill       {cfg['loss']}, T {cfg['temperature']:g}{weight}{topk} from {r['teacher']}; "
                     f"teacher forwards {r['teacher_s'] or 0:.1f} s ({r.get('teacher_mode')}{share})")
    return lines


def run(args) -> int:
    from ..recovery.config import RecoveryConfig
    from ..workflows.recover import recover_model
    config = config_from_args(args, RecoveryConfig, owner="recover")   # --device is the shared model flag
    report = recover_model(args.model, config, data=args.data, output=args.output, data_dir=args.data_dir,
                           dtype=args.dtype, device=args.device, trust_remote_code=args.trust_remote_code,
                           evals=args.eval, eval_seqlen=args.eval_seqlen, eval_windows=args.eval_windows,
                           overwrite=args.overwrite)
    print(summary(report))
    return 0
