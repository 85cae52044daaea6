"""Judge: a run's results, the baseline store and the settings in; structured verdicts out."""
