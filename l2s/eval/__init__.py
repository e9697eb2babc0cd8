"""Evaluation: generate, grade and measure responses as the papers do (see ``run.evaluate``).

``evaluate(EvalConfig(model=..., datasets=("toy",), out="runs/x", sampling=SamplingConfig(n=4,
temperature=0.6, top_p=0.95)))`` returns the run directory (config, generations, metrics, provenance).
"""

from l2s.eval.grading import GradeConfig, Grader, grade_many
from l2s.eval.metrics import compare, compute_metrics
from l2s.eval.run import EvalConfig, evaluate
from l2s.eval.sampling import SamplingConfig
from l2s.eval.score import ScoreConfig, score_responses

__all__ = ["EvalConfig", "GradeConfig", "Grader", "SamplingConfig", "ScoreConfig", "compare",
           "compute_metrics", "evaluate", "grade_many", "score_responses"]
