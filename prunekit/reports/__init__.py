"""Reports, one idea in three modules: what every run writes and prints (`summary`: the
prunekit_report.json sections and format_summary), what was done to a model stage by stage
(`lineage`), and the `prunekit compare` page over many runs' reports (`comparison`)."""
