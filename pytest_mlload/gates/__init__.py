"""Gates: a run's results, the baseline store and the settings in; structured verdicts out.

:func:`~pytest_mlload.gates.judgement.judge` (also ``pytest_mlload.judge``) picks the gates
per part and combines their verdicts into a :class:`~.judgement.Judgement`;
:mod:`.metrics` holds the comparisons themselves (capacity, P99 at the baseline's load,
error ratio, spike, rate limits).
"""
