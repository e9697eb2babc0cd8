"""The task-vector methods' helpers under their former module name (the methods now live one per file:
:mod:`.average`, :mod:`.task_arithmetic`, :mod:`.ties`, :mod:`.dare`, :mod:`.linear`)."""

from l2s.merge.methods.average import average  # noqa: F401
from l2s.merge.methods.dare import INT_OF_SIZE, dare  # noqa: F401
from l2s.merge.methods.linear import linear  # noqa: F401
from l2s.merge.methods.task_arithmetic import task_arithmetic  # noqa: F401
from l2s.merge.methods.ties import SELECT_BLOCK, SELECT_DIRECT, kth_smallest, ties, trim_delta, trim_threshold  # noqa: F401
