"""Ada-R1 preference data: bi-level pairs from a long and a short model's graded samples.

``PairsConfig`` says how; ``build_pairs`` builds rows and stats; ``write_pairs`` writes a run directory.
"""

from l2s.prefs.build import build_pairs, write_pairs
from l2s.prefs.config import PairsConfig

__all__ = ["PairsConfig", "build_pairs", "write_pairs"]
