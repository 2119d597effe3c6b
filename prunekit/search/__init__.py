"""The evolutionary compression search engine: fitness of candidates against the dense model,
executors that spread fitness evaluation over processes or a Ray cluster, the sparsity
database, and the search-history plot. The pure search math lives in solvers/evolution.py."""
