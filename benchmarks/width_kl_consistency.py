"""Check for BENCHMARKS.md (width, KL fitness): run with PRUNEKIT_DATA_DIR set; prints the reported and the directly computed KL."""
# Does the width search's reported KL (fixed windows, exact KL, no reformation) equal the KL of the
# model it returns? A mismatch would mean the search scores something other than what it builds.
import copy, os, torch, torch.nn.functional as F
import prunekit
from prunekit import SearchConfig
from prunekit.models.loading import load_model
from prunekit.data.calibration import build_calibration
model, tok, _ = load_model("smollm2-135m")
dense = copy.deepcopy(model)
ids = build_calibration("c4", None, tok, 8, 256, 0, os.environ.get("PRUNEKIT_DATA_DIR")).input_ids
for stages in (None, "256:4,512:2"):
    cfg = SearchConfig(keep=0.8, generations=1, population=4, mutants=2, crossovers=0, randoms=2, top_k=2,
                       fitness="kl", kl_topk=0, reform="none", fitness_windows=2, fitness_seqlen=256, stages=stages)
    m = copy.deepcopy(dense)
    res = prunekit.prune(m, cfg, ids, progress=False)
    small = res.model
    x = ids[:2, :256]
    with torch.no_grad():
        p = F.log_softmax(dense(x, use_cache=False).logits.float(), -1)
        q = F.log_softmax(small(x, use_cache=False).logits.float(), -1)
    direct = float((p.exp() * (p - q)).sum(-1).mean())
    print(stages, "reported final", res.details.get("final_fitness"), "direct", direct, flush=True)
