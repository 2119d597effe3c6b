"""The dense teacher of a distillation run: which model it is, loaded frozen, checked to speak the
student's vocabulary and not to be the student itself."""
from __future__ import annotations

from pathlib import Path

from ..errors import PrunekitError
from ..reports.lineage import origin, stages_of


def teacher_spec(configured: str | None, prior: dict | None, student: str) -> str:
    """--teacher, else the dense model the input's lineage starts from."""
    if configured:
        return configured
    spec = origin(stages_of(prior))
    if not spec:
        raise PrunekitError(f"distillation needs a teacher: {student} has no prunekit report naming its dense "
                            f"source; pass --teacher")
    return spec


def _where(spec: str) -> Path | None:
    """The folder or file a spec loads from, when it is local."""
    from ..models.loading import resolve_model_source
    try:
        source = resolve_model_source(spec)
    except PrunekitError:
        return None
    target = source.gguf or source.path
    return Path(target).resolve() if target and Path(target).exists() else None


def check_not_itself(teacher: str, student: str | None) -> None:
    if student is None:
        return
    a, b = _where(teacher), _where(student)
    if a is not None and a == b:
        raise PrunekitError(f"the teacher {teacher} is the model being recovered: distilling a model from itself "
                            f"teaches nothing (pass the dense model with --teacher)")


def check_vocabulary(teacher, student, teacher_tok=None, student_tok=None) -> None:
    """Same output width, and where both tokenizers are known, the same token ids."""
    vt = teacher.get_output_embeddings().weight.shape[0]
    vs = student.get_output_embeddings().weight.shape[0]
    if vt != vs:
        raise PrunekitError(f"the teacher's vocabulary ({vt} tokens) differs from the model's ({vs}): "
                            f"distillation compares distributions over the same tokens")
    if teacher_tok is not None and student_tok is not None and teacher_tok.get_vocab() != student_tok.get_vocab():
        raise PrunekitError("the teacher's tokenizer maps tokens to other ids than the model's: distillation "
                            "compares distributions over the same tokens")


def frozen(model):
    model.eval()
    model.requires_grad_(False)
    model.config.use_cache = False
    return model


def load_teacher(teacher, student, student_tok, prior: dict | None, student_spec: str | None, dtype,
                 trust_remote_code: bool):
    """(teacher model, its spec). `teacher` is a spec, a loaded model, or None for the lineage's source."""
    if teacher is not None and not isinstance(teacher, (str, Path)):
        if teacher is student:
            raise PrunekitError("the teacher is the model being recovered: distilling a model from itself "
                                "teaches nothing")
        check_vocabulary(teacher, student)
        return frozen(teacher), type(teacher).__name__
    spec = teacher_spec(str(teacher) if teacher else None, prior, student_spec or type(student).__name__)
    check_not_itself(spec, student_spec)
    from ..models.loading import load_model
    dtype = dtype if dtype != "auto" else next(student.parameters()).dtype
    try:
        model, tok, _ = load_model(spec, dtype, trust_remote_code)
    except PrunekitError as e:
        raise PrunekitError(f"teacher {spec}: {e}") from e
    check_vocabulary(model, student, tok, student_tok)
    return frozen(model), spec

