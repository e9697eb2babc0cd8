"""The activation-based methods' helpers under their former module name (the methods now live one per
file: :mod:`.aim`, :mod:`.sens`)."""

from l2s.merge.methods.aim import aim, aim_importance  # noqa: F401
from l2s.merge.methods.sens import sens, sens_coefficients, sens_cross_task_scaling, sens_task_scaling  # noqa: F401
