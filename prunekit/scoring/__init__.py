"""Scoring candidates of the evolutionary searches: fitness against the dense model, the executors
that spread it over processes or a Ray cluster, and the search-history plot. The pure search math
lives in solvers/evolution.py; the searches themselves, and the sparsity database they assemble
candidates from, in methods/."""
