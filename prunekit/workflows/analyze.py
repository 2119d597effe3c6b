"""`prunekit analyze` as a function: layer similarity (CKA, adjacent cosine, block influence)
with its JSON and figures."""
from __future__ import annotations

from ..reports import summary as rep
from ..analysis import analyze_layers
from ..export.atomic import atomic_dir, check_output_dir, write_json
from ..data.calibration import build_calibration
from ..models.loading import load_model
from ..models.paths import check_output_apart
from .common import at_least, check_device
from .preflight import check_positions, check_remote_code, check_writable, fit_window


DEFAULT_SEQLEN = 128


def analyze_model(model: str, output: str, *, calib: str = "c4", nsamples: int = 16, seqlen: int | None = None,
                  seed: int = 0,
                  skip_first: int = 0, data_dir: str | None = None, dtype: str = "auto", device: str = "cpu",
                  trust_remote_code: bool = False, overwrite: bool = False) -> dict:
    """Write analysis.json, cka.png and layer_scores.png into `output`; returns the analysis. Windows
    default to 128 tokens, shortened to the model's positions where it has fewer."""
    from ..plots import plot_cka, plot_layer_scores

    device = check_device(device)
    at_least("nsamples", nsamples)
    at_least("seqlen", seqlen, 2)
    check_output_apart(output, model=model)
    check_output_dir(output, overwrite)
    check_writable(output)
    check_remote_code(model, trust_remote_code)
    loaded, tok, source = load_model(model, dtype, trust_remote_code)
    seqlen, note = fit_window(loaded.config, seqlen, DEFAULT_SEQLEN)
    check_positions(loaded.config, seqlen=seqlen)
    calibration = build_calibration(calib, loaded, tok, nsamples, seqlen, seed, data_dir, device)
    result = analyze_layers(loaded, calibration, device, skip_first)
    report = {"command": "analyze", "model": rep.model_section(loaded, source), "calibration": calibration.describe(),
              **result, "environment": rep.environment(device)}
    if note:
        report["calibration"]["window_note"] = note
    name = source.spec
    with atomic_dir(output, overwrite) as tmp:
        write_json(tmp / "analysis.json", report)
        plot_cka(result["cka"], tmp / "cka.png",
                 f"Linear CKA of block outputs, {name}\n{calibration.dataset} {calibration.nsamples} x {calibration.seqlen} tokens"
                 + (f", first {skip_first} positions left out" if skip_first else ""))
        plot_layer_scores({"block influence\n1 - cos(in, out)": result["block_influence"],
                           "cos(out_i, out_i+1)": result["adjacent_cosine"]},
                          tmp / "layer_scores.png", f"Per-block scores, {name}")
    return report
