from .ppl import PPL_DATASETS, eval_tokens, perplexity, perplexity_of_ids

__all__ = ["PPL_DATASETS", "eval_tokens", "perplexity", "perplexity_of_ids"]
