"""l2s — long-to-short reasoning: model merging and Ada-R1, as a reproducible study.

Subpackages: ``l2s.toy`` (CPU toy world), ``l2s.merge`` (merging methods + streaming executor),
``l2s.data`` / ``l2s.eval`` (benchmarks, generation, grading, metrics), ``l2s.prefs`` / ``l2s.dpo``
(Ada-R1), ``l2s.study`` / ``l2s.figures`` (batch runner and paper-style figures).
"""

__version__ = "0.1.0"
