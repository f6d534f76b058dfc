"""The hooks Lightning calls at every batch, and how dlrun's own callbacks and module drop the ones they
do not use.

Lightning calls each hook on every callback and on the module, a dozen hooks a training batch: for each,
a debug-log line formatted, a profiler context, two attribute writes on the module and the call of an
empty method (about 1% of a small model's epoch per callback). Lightning skips a hook whose attribute is
not callable (`pytorch_lightning.trainer.call`), so an instance of a dlrun class gets None for each hook
its class leaves as Lightning's empty one. On the instance, not the class: a subclass that defines a hook,
calls super() from it or mixes in a class that defines it keeps it. A plugin's callbacks are called as
Lightning calls them.
"""

from __future__ import annotations

import functools

import pytorch_lightning as pl

# Called at every training or validation batch, on every callback and on the module.
PER_BATCH_HOOKS = ("on_train_batch_start", "on_train_batch_end", "on_before_zero_grad", "on_before_backward",
                   "on_after_backward", "on_before_optimizer_step")
# Also at every validation and test batch, on callbacks. (On the module Lightning reads their signature,
# so there they stay methods.)
PER_EVALUATION_BATCH_HOOKS = ("on_validation_batch_start", "on_validation_batch_end", "on_test_batch_start",
                              "on_test_batch_end")


@functools.lru_cache(maxsize=None)
def unused_hooks(cls: type, base: type, hooks: tuple[str, ...]) -> tuple[str, ...]:
    """The hooks of `hooks` that `cls` takes unchanged from `base`, where they do nothing."""
    return tuple(hook for hook in hooks if getattr(cls, hook) is getattr(base, hook))


def skip_unused_hooks(instance, base: type, hooks: tuple[str, ...]) -> None:
    """Set to None, on `instance`, each of `hooks` that its class takes unchanged from `base`."""
    for hook in unused_hooks(type(instance), base, hooks):
        object.__setattr__(instance, hook, None)  # a plain attribute, also on an nn.Module


class SkipsUnusedHooks:
    """A Lightning callback base: the per-batch hooks a callback's class does not define are not called."""

    def __new__(cls, *args, **kwargs):
        instance = super().__new__(cls)
        skip_unused_hooks(instance, pl.Callback, PER_BATCH_HOOKS + PER_EVALUATION_BATCH_HOOKS)
        return instance
