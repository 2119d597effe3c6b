"""Pure tensor math: masks, scores and statistics. No models, hooks or I/O in here."""
