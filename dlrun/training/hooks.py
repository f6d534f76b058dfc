"""The hooks Lightning calls at every batch, and how dlrun's own callbacks and module drop the ones they
do not use.

Lightning calls each hook on every callback and on the module, a dozen hooks a training batch: for each,
a debug-log line formatted, a profiler context, two attribute writes on the module and the call of an
empty method (about 1% of a small model's epoch per callback). Lightning skips a hook whose attribute is
not callable (`pytorch_lightning.trainer.call`), so a class sets the hooks it leaves empty to None. Only
dlrun's own classes do this; a plugin's callbacks are called as Lightning calls them.
"""

from __future__ import annotations

import pytorch_lightning as pl

# Called at every training or validation batch, on every callback and on the module.
PER_BATCH_HOOKS = ("on_train_batch_start", "on_train_batch_end", "on_before_zero_grad", "on_before_backward",
                   "on_after_backward", "on_before_optimizer_step")
# Also at every validation and test batch, on callbacks. (On the module Lightning reads their signature,
# so there they stay methods.)
PER_EVALUATION_BATCH_HOOKS = ("on_validation_batch_start", "on_validation_batch_end", "on_test_batch_start",
                              "on_test_batch_end")


def skip_unused_hooks(cls: type, base: type, hooks: tuple[str, ...]) -> None:
    """Set to None each of `hooks` that `cls` inherits unchanged from `base` (where it does nothing)."""
    for hook in hooks:
        if getattr(cls, hook) is getattr(base, hook):
            setattr(cls, hook, None)


class SkipsUnusedHooks:
    """A Lightning callback base: the per-batch hooks a subclass does not define are not called at all."""

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        skip_unused_hooks(cls, pl.Callback, PER_BATCH_HOOKS + PER_EVALUATION_BATCH_HOOKS)
