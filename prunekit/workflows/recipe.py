"""`prunekit prune --recipe FILE.yaml` as a function: several stages (any registered method, and
`recover`) run one after another into one output folder, each stage's report kept.

A recipe (YAML, or the same as a dict):

    model: smollm2-135m            # optional: the run's `model` argument wins
    calibration: {calib: c4}       # optional defaults of every pruning stage: calib, nsamples, seqlen, seed
    eval_each_stage: false         # evaluate after every stage (lineage keeps each ppl), not only the last
    stages:
      - method: slm                # a registered method, its options by config field name
        remove_layers: 6
        calibration: {nsamples: 10}
      - method: search
        keep: 0.8
      - method: recover            # LoRA recovery, RecoveryConfig fields, `data` the training text
        steps: 50
        data: c4

Everything that can be known from the recipe is checked before any work and refused in one line
naming the stage: unknown method or option, a bad value, an impossible order (a method that merges
blocks after one that leaves blocks of different widths). Calibration defaults to each method's
own (`Method.calibration`). Every stage is the same call as running it by hand (`prune_model`,
`recover`) on the previous stage's saved output, so a recipe equals its stages run one by one.
"""
from __future__ import annotations

import dataclasses
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from ..export import staging
from ..export.atomic import replace_dir
from ..reports import lineage as lin
from ..export.atomic import check_output_dir, json_text
from ..errors import ConfigError, PrunekitError
from ..export.save import REPORT_NAME
from ..export.stale import remove_stale_temporaries
from ..models.paths import check_output_apart
from ..methods.registry import all_methods, method_named
from .common import EvalProtocol, at_least, check_device

RECOVER = lin.RECOVER
RECIPE_KEYS = ("model", "calibration", "eval_each_stage", "stages")
CALIBRATION_KEYS = ("calib", "nsamples", "seqlen", "seed")
# recovery options a recipe sets itself: the run's device, no resume, a model that later stages can use
RECOVERY_FIXED = ("device", "resume", "keep_adapter")
STAGES_FOLDER = "stages"


class RecipeError(PrunekitError):
    """A recipe that cannot run, found before any work."""


@dataclass
class Stage:
    index: int                      # 1-based, as messages and the lineage count
    method: str                     # a registered method's name, or "recover"
    config: object                  # the method's config, or a RecoveryConfig
    calibration: dict = field(default_factory=dict)   # calib, nsamples, seqlen, seed given for this stage
    data: str = "c4"                # recover: training text

    @property
    def name(self) -> str:
        return f"recipe stage {self.index} ({self.method})"

    def describe(self) -> dict:
        out = {"stage": self.index, "method": self.method, "config": self.config.to_dict()}
        out.update({"data": self.data} if self.method == RECOVER else {"calibration": self.calibration})
        return out


@dataclass
class Recipe:
    stages: list[Stage]
    model: str | None = None
    eval_each_stage: bool = False
    source: str | None = None       # the file it was read from

    def describe(self) -> dict:
        return {"file": self.source, "model": self.model, "eval_each_stage": self.eval_each_stage,
                "stages": [s.describe() for s in self.stages]}


def load_recipe(recipe) -> Recipe:
    """A Recipe from a YAML file path or a dict, every stage checked; RecipeError otherwise."""
    source = None
    if isinstance(recipe, Recipe):
        return recipe
    if isinstance(recipe, (str, os.PathLike)):
        source = str(recipe)
        recipe = _read_yaml(Path(recipe))
    if not isinstance(recipe, dict):
        raise RecipeError("a recipe is a mapping with a `stages` list")
    unknown = sorted(set(recipe) - set(RECIPE_KEYS))
    if unknown:
        raise RecipeError(f"recipe: unknown key {unknown[0]!r}: a recipe has {', '.join(RECIPE_KEYS)}")
    defaults = _calibration(recipe.get("calibration"), "recipe")
    stages = recipe.get("stages")
    if not isinstance(stages, list) or not stages:
        raise RecipeError("recipe: `stages` must be a non-empty list")
    each = recipe.get("eval_each_stage", False)
    if not isinstance(each, bool):
        raise RecipeError(f"recipe: eval_each_stage must be true or false (got {each!r})")
    model = recipe.get("model")
    if model is not None and not isinstance(model, str):
        raise RecipeError(f"recipe: model must be a model spec (got {model!r})")
    parsed = [_stage(i, spec, defaults) for i, spec in enumerate(stages, 1)]
    _check_order(parsed)
    return Recipe(parsed, model, each, source)


def _read_yaml(path: Path):
    import yaml
    if not path.is_file():
        raise RecipeError(f"recipe file not found: {path}")
    try:
        return yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        raise RecipeError(f"recipe {path}: not valid YAML ({str(e).splitlines()[0]})") from None


def _calibration(given, where: str) -> dict:
    if given is None:
        return {}
    if not isinstance(given, dict):
        raise RecipeError(f"{where}: calibration must be a mapping of {', '.join(CALIBRATION_KEYS)}")
    for key, value in given.items():
        if key not in CALIBRATION_KEYS:
            raise RecipeError(f"{where}: unknown calibration key {key!r}: choose from {', '.join(CALIBRATION_KEYS)}")
        want = str if key == "calib" else int
        if not isinstance(value, want) or isinstance(value, bool):
            raise RecipeError(f"{where}: calibration {key} must be {'a data spec' if want is str else 'an integer'} "
                              f"(got {value!r})")
    return dict(given)


def _stage(index: int, spec, defaults: dict) -> Stage:
    if not isinstance(spec, dict) or not isinstance(spec.get("method"), str):
        raise RecipeError(f"recipe stage {index}: a stage is a mapping with a `method` name")
    options = dict(spec)
    name = options.pop("method")
    where = f"recipe stage {index} ({name})"
    if name == RECOVER:
        from ..recovery.config import RecoveryConfig
        data = options.pop("data", "c4")
        if not isinstance(data, str):
            raise RecipeError(f"{where}: data must be a data spec (got {data!r})")
        fixed = sorted(set(options) & set(RECOVERY_FIXED))
        if fixed:
            raise RecipeError(f"{where}: {fixed[0]} cannot be set in a recipe (the run's device is used, stages "
                              f"never resume, later stages need the merged model)")
        return Stage(index, name, _config(RecoveryConfig, options, where, RECOVER), data=data)
    methods = all_methods()
    if name not in methods:
        raise RecipeError(f"{where}: unknown method: choose from {', '.join(list(methods) + [RECOVER])}")
    calibration = {**defaults, **_calibration(options.pop("calibration", None), where)}
    cls = method_named(name)
    if cls.calibration is None and calibration.keys() - {"calib"} and "calibration" in spec:
        raise RecipeError(f"{where}: {name} uses no calibration data")
    for key in ("nsamples", "seqlen"):
        if key in calibration and calibration[key] < (2 if key == "seqlen" else 1):
            raise RecipeError(f"{where}: calibration {key} must be at least {2 if key == 'seqlen' else 1}")
    return Stage(index, name, _config(cls.config_class, options, where, f"method {name}"), calibration)


def _config(config_cls, options: dict, where: str, owner: str):
    """The config from options named by field, as the command line builds it (from_dict: strings
    converted to the field's type, an unknown name or a bad value refused naming the field)."""
    try:
        return config_cls.from_dict(options, owner=owner)
    except ConfigError as e:
        raise RecipeError(f"{where}: {e.render()}") from None
    except PrunekitError as e:
        raise RecipeError(f"{where}: {e}") from None


def _check_order(stages: list[Stage]) -> None:
    """Orders that cannot work, from what the methods declare."""
    widened = None
    for s in stages:
        cls = None if s.method == RECOVER else method_named(s.method)
        if cls is not None and cls.needs_alike_blocks and widened is not None:
            raise RecipeError(f"{s.name}: merges blocks' weights, but {widened.name} leaves blocks of different "
                              f"widths; put {s.method} before {widened.method}")
        if cls is not None and cls.varies_block_widths and widened is None:
            widened = s


def run_recipe(recipe, *, model: str | None = None, output: str | None = None, overwrite: bool = False,
               data_dir: str | None = None, dtype: str = "float32", device: str = "cpu",
               trust_remote_code: bool = False, evals="wikitext2", eval_seqlen: int | None = None,
               eval_windows: int | None = None, progress: bool = True) -> dict:
    """Run `recipe` (a YAML path, a dict or a Recipe) on `model` (default: the recipe's) and save
    the final model to `output`, with every stage's report in `output/stages/`. Returns the
    final report; its `lineage` lists the stages."""
    plan = load_recipe(recipe)
    model = model or plan.model
    if not model:
        raise RecipeError("the recipe names no model: give one (--model)")
    device = check_device(device)
    protocol = EvalProtocol.of(evals, eval_seqlen, eval_windows)
    at_least("eval_seqlen", protocol.seqlen, 2)
    protocol.check_names()      # before any stage runs: evaluation comes after the last
    at_least("eval_windows", protocol.windows)
    if output:
        check_output_apart(output, model=model)
        check_output_dir(output, overwrite)
        remove_stale_temporaries(output)    # a killed recipe's stage folders among them
    _refuse_evaluation_training_data(plan, data_dir)
    parent = Path(output).resolve().parent if output else Path(tempfile.gettempdir())
    parent.mkdir(parents=True, exist_ok=True)
    work = staging.recipe_work(parent / (Path(output).name if output else "recipe"))
    try:
        reports, folders = [], []
        spec = model
        for stage in plan.stages:
            last = stage is plan.stages[-1]
            folder = work / f"{stage.index:02d}-{stage.method}"
            report = _run_stage(stage, spec, folder, data_dir=data_dir, dtype=dtype, device=device,
                                trust_remote_code=trust_remote_code if stage.index == 1 else True,
                                protocol=protocol if (last or plan.eval_each_stage) else protocol.only(()),
                                progress=progress)
            reports.append(report)
            if folders:     # the previous stage's weights are no longer needed
                _drop_weights(folders[-1])
            folders.append(folder)
            spec = str(folder)
        final = _finish(plan, model, reports, folders, output)
        if output:
            _publish(folders[-1], output)
        return final
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _refuse_evaluation_training_data(plan: Recipe, data_dir) -> None:
    from ..data.sources import default_data_dir
    from ..recovery.data import refuse_evaluation_data
    for s in plan.stages:
        if s.method == RECOVER:
            try:
                refuse_evaluation_data(s.data, data_dir or default_data_dir())
            except PrunekitError as e:
                raise RecipeError(f"{s.name}: {e}") from None


def _run_stage(stage: Stage, spec: str, folder: Path, *, data_dir, dtype, device, trust_remote_code,
               protocol: EvalProtocol, progress) -> dict:
    """One stage, exactly as its command would run it on `spec`, saved to `folder`."""
    try:
        if stage.method == RECOVER:
            return _recover_stage(stage, spec, folder, data_dir=data_dir, dtype=dtype, device=device,
                                  trust_remote_code=trust_remote_code, protocol=protocol, progress=progress)
        from .prune import prune_model
        cal = stage.calibration
        return prune_model(spec, stage.config, calib=cal.get("calib", "c4"), nsamples=cal.get("nsamples"),
                           seqlen=cal.get("seqlen"), seed=cal.get("seed", 0), data_dir=data_dir, dtype=dtype,
                           device=device, trust_remote_code=trust_remote_code, evals=protocol, output=str(folder),
                           progress=progress,
                           stream=False)     # recipes run in memory: a streamed report has no lineage to chain
    except ConfigError as e:
        raise PrunekitError(f"{stage.name}: {e.render()}") from e
    except PrunekitError as e:
        raise PrunekitError(f"{stage.name}: {e}") from e


def _recover_stage(stage: Stage, spec: str, folder: Path, *, data_dir, dtype, device, trust_remote_code,
                   protocol: EvalProtocol, progress) -> dict:
    """What `prunekit recover` does (cli/recover.py), as a function of the stage."""
    from ..models.adapter import ModelAdapter
    from ..models.loading import load_model
    from ..recovery.api import recover
    from .common import prepare_evals, run_evals
    from .preflight import check_positions

    config = dataclasses.replace(stage.config, device=device)
    loaded, tok, source = load_model(spec, dtype, trust_remote_code)
    config.target_names(ModelAdapter(loaded).linear_names())
    protocol = protocol.fit(loaded.config)
    check_positions(loaded.config, eval_seqlen=protocol.used_seqlen)
    texts = prepare_evals(protocol, tok, data_dir)
    result = recover(loaded, config, data=stage.data, output=str(folder), tokenizer=tok, data_dir=data_dir,
                     progress=progress, source=source,
                     measure=lambda m: {"eval": run_evals(m, texts, protocol, device)})
    return result.report


def _drop_weights(folder: Path) -> None:
    for p in folder.glob("*.safetensors"):
        p.unlink()


def _finish(plan: Recipe, model: str, reports: list[dict], folders: list[Path], output: str | None) -> dict:
    """The final report: the last stage's, with the stage inputs named for what they were (the
    recipe's own work folders are gone) and the recipe; every stage's report and figures go to
    `stages/` in the final folder."""
    names = {str(f): f"recipe stage {i} output" for i, f in enumerate(folders, 1)}
    for report in reports:
        _rename_inputs(report, names)
    final = reports[-1]
    final["recipe"] = plan.describe()
    final["model"]["source"] = lin.origin(final["lineage"], model)
    if output:
        final["output"] = output
    keep = folders[-1] / STAGES_FOLDER
    keep.mkdir()
    for stage, report, folder in zip(plan.stages, reports, folders):
        prefix = f"{stage.index:02d}-{stage.method}"
        (keep / f"{prefix}.json").write_text(json_text(report))
        for png in folder.glob("*.png"):
            shutil.copy2(png, keep / f"{prefix}-{png.name}")
    (folders[-1] / REPORT_NAME).write_text(json_text(final))
    return final


def _rename_inputs(report: dict, names: dict) -> None:
    for key in ("pruned_from", "recovered_from"):
        if report.get(key) in names:
            report[key] = names[report[key]]
    for stage in report.get("lineage", []):
        if stage.get("input") in names:
            stage["input"] = names[stage["input"]]
    if report.get("output") in names:
        report["output"] = names[report["output"]]
    before = report.get("before_recovery")
    if isinstance(before, dict):
        _rename_inputs(before, names)


def _publish(folder: Path, output: str) -> None:
    """The final stage's folder becomes `output` in one rename (a replaced folder goes after)."""
    replace_dir(Path(folder), Path(output).resolve())


def format_recipe(report: dict) -> str:
    """What `prunekit prune --recipe` prints: the final summary and one line per stage."""
    from ..reports.summary import format_summary
    lines = [format_summary(report)]
    if len(report["lineage"]) == 1:     # the summary names the lineage of several stages itself
        lines.append("  lineage       " + lin.label(report["lineage"]))
    lines += ["    " + line for line in lin.lines(report["lineage"])]
    return "\n".join(lines)

