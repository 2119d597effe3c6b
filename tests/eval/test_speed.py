"""Speed measurements: ratios pair the rounds of models timed together."""


def test_speed_ratios_pair_the_rounds_of_models_timed_together():
    from prunekit.eval.speed import ratios
    base = {"params_total": 10, "layers": 4, "peak_rss_gb": 1.0}
    pruned = {**base, "layers": 2, "prefill_all_s": [1.0, 3.0, 2.0], "prefill_s": 2.0,
              "decode_all_tokens_per_s": [20.0, 5.0, 30.0], "decode_tokens_per_s": 20.0, "session": "a"}
    dense = {**base, "prefill_all_s": [2.0, 6.0, 2.0], "prefill_s": 2.0,
             "decode_all_tokens_per_s": [10.0, 2.5, 10.0], "decode_tokens_per_s": 10.0, "session": "a"}
    r = ratios(pruned, dense)
    # per-round ratios 0.5, 0.5, 1.0 (prefill) and 2, 2, 3 (decode): their medians
    assert r["paired_rounds"] and r["prefill_latency"] == 0.5 and r["decode_tokens_per_s"] == 2.0
    r = ratios(pruned, {**dense, "session": "b"})      # measured apart: ratio of the medians
    assert not r["paired_rounds"] and r["prefill_latency"] == 1.0 and r["decode_tokens_per_s"] == 2.0
    assert r["layers"] == 0.5
