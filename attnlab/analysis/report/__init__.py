"""`attnlab report DIR`: an offline report of a finished sweep or reproduction directory
(the mean ± std table over seeds, the metric against each swept axis, the metric against
measured cost with its Pareto front). See `attnlab.analysis.report.cli`."""
