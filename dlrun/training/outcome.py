"""How a training run ends: every outcome, its final state, its message and its checkpoint, in one place.

`train()` runs inside `RunOutcome`, which maps each way out to what the MLflow run is left as:

| what happened                                    | the run    | the error raised                          |
|--------------------------------------------------|------------|-------------------------------------------|
| everything worked and was stored (`finish`)      | FINISHED   | none                                      |
| bad input, before the run exists                 | none       | the ConfigError / DataError, as it was    |
| a signal before the run exists                   | none       | Interrupted: no run was recorded          |
| a signal once it exists, outside fit             | KILLED     | Interrupted: its checkpoint, or none yet  |
| a signal in fit (stop at a batch boundary)       | KILLED     | Interrupted: the checkpoint of that step  |
| a signal while the run is being closed           | as closed  | Interrupted: the state it was closed with |
| a non-finite loss in fit                         | FAILED     | TrainingFailed: the last good checkpoint  |
| a streamed file unreadable once the run exists   | FAILED     | DataError: the checkpoint, `dlrun resume` |
| a process reading streamed data died, in fit     | FAILED     | WorkerDied: the checkpoint, `dlrun resume`|
| the artifact store refused config.yaml           | FAILED     | TrainingFailed: before training           |
| the store refused checkpoints or model at the end| FAILED     | TrainingFailed: where the weights are kept|
| an error dlrun did not foresee                   | FAILED     | the error itself                          |

A KILLED run, and one FAILED by a non-finite loss, has the checkpoints that exist uploaded before
it is closed (resume continues from them); every run is closed with further signals held back,
so that it is never left RUNNING half-written, and a signal held back is answered once it is closed.
Under DDP the ranks other than 0 hold a record that writes nothing, so the same rules apply.
"""

from __future__ import annotations

import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator

from dlrun.errors import DataError, DlrunError, TrainingFailed, WorkerDied
from dlrun.training.signals import Received, signals_deferred, signals_raise, stop_on_signals


class Interrupted(DlrunError):
    """Ctrl-C or SIGTERM stopped the command; the message says what state the run was left in."""

    exit_code = 130


class RunOutcome:
    """The state of one run while it goes: its record once it exists, its trainer once fit starts."""

    def __init__(self, output_dir: Path):
        self.output_dir = output_dir
        self.record = None  # held from before the MLflow run is created, so a half-made run is closed too
        self.signals = Received()  # signals outside fit (inside fit they stop at a batch boundary)
        self._trainer = None

    @property
    def run_exists(self) -> bool:
        return self.record is not None and self.record.run_id is not None

    @property
    def checkpoint_dir(self) -> Path:
        return self.output_dir / self.record.run_id / "checkpoints"

    def open(self, record, start: Callable[[object], None]):
        """The MLflow run: `start(record)` creates (or reopens) it with signals held until it is whole; the
        user's signal then stops the run (KILLED) or, when creating failed, the command (no run)."""
        self.record = record
        creating = Received()
        try:
            with signals_deferred(creating):
                start(record)
                if record.refused:  # without its config.yaml, the run could be neither resumed nor reproduced
                    self._close("FAILED", upload=False)
                    raise TrainingFailed(
                        f"the run's files could not be stored: {record.refusal} (not stored: "
                        f"{', '.join(record.refused)}). Run {record.run_id} is marked FAILED before training. "
                        f"Free space in (or allow writing to) {record.artifact_location()} and train again.")
        finally:
            if creating.count:  # even when creating failed: the user asked to stop (a sweep must too)
                raise KeyboardInterrupt
        return record

    @contextmanager
    def fitting(self, trainer, stopper) -> Iterator[None]:
        """trainer.fit inside: signals stop it at the next batch boundary with a checkpoint (`stopper`, a
        StopOnSignal); a non-finite loss closes the run FAILED, a stop KILLED (a crash is run_outcome's)."""
        self._trainer = trainer
        try:
            with stop_on_signals(stopper):
                yield
        except TrainingFailed as failure:  # a non-finite loss
            self._close("FAILED")
            last = self.checkpoint_dir / "last.ckpt"
            saved = f"the last good checkpoint is {last}" if last.is_file() else "no checkpoint was saved before it"
            raise TrainingFailed(f"{failure} The run {self.record.run_id} is marked FAILED; {saved}.") from None
        except (KeyboardInterrupt, SystemExit):
            # Lightning turns Ctrl-C into sys.exit(1) after its on_exception hooks ran, and its own SIGTERM
            # handler (under DDP, before StopOnSignal takes SIGTERM over) into a SystemExit: both stop the run.
            raise self._killed(f"at step {trainer.global_step}") from None
        except Exception as error:
            # The user's stop came first; what broke on the way (data workers ended by a SIGTERM to the
            # whole process group) is part of it. StopOnSignal saved the checkpoint where fit stopped.
            if stopper.requested:
                raise self._killed(f"at step {trainer.global_step}") from None
            # A streamed file that cannot be read, or a reading process that died (torch raises that from
            # its SIGCHLD handler, wherever this process is); StopOnSignal saved the checkpoint.
            unreadable = error if isinstance(error, DataError) else _worker_death(error, trainer)
            if unreadable is None:
                raise
            raise self.unreadable_data(unreadable) from None

    def finish(self, model_uri: str | None) -> None:
        """Everything is logged: FINISHED, or FAILED when the store refused what a FINISHED run must hold
        (`model_uri` is then a local folder where the model was kept, if it could be)."""
        if self.record.refused:
            self._close("FAILED", upload=False)  # record_results tried the upload; it was refused
            raise self._not_stored(model_uri)
        self._close("FINISHED", upload=False)

    def stopped(self, stop: BaseException) -> BaseException:
        """What a KeyboardInterrupt or SystemExit outside fit becomes."""
        if isinstance(stop, SystemExit) and not self.signals.count:  # Lightning turns Ctrl-C in test into exit 1
            self.fail_if_open()
            return stop
        if not self.run_exists:
            return Interrupted("interrupted before training started; no run was recorded.")
        if self.record.ended:
            return Interrupted(f"interrupted after run {self.record.run_id} was marked {self.record.ended}.")
        step = self._trainer.global_step if self._trainer is not None else 0
        return self._killed("before training started" if step == 0 else f"after training, at step {step}")

    def unreadable_data(self, error: DataError) -> DataError:
        """Data that could not be read once the run exists (a streamed file, in fit or test): the run is
        FAILED with its checkpoints uploaded, and the error says how to continue it."""
        self._close("FAILED")
        step = self._trainer.global_step if self._trainer is not None else 0
        run_id, last = self.record.run_id, self.checkpoint_dir / "last.ckpt"
        kept = f"its checkpoint is {last}" if last.is_file() else "it has no checkpoint yet"
        if isinstance(error, WorkerDied):  # the run continues as it was configured: a resume takes no overrides
            return WorkerDied(f"{error} Training stopped at step {step}: run {run_id} is marked FAILED and {kept}. "
                              f"Continue it once memory is free or the file restored: dlrun resume {run_id} "
                              "(fewer workers or smaller batches need a new run).")
        return DataError(f"{error} Training stopped at step {step}: run {run_id} is marked FAILED and {kept}. "
                         f"Once the data is fixed (a removed file changes the split), continue it: "
                         f"dlrun resume {run_id}")

    def fail_if_open(self) -> None:
        """An error dlrun did not foresee: the run is FAILED, not left RUNNING; the error is raised as it was."""
        if not self.run_exists or self.record.ended:
            return
        try:
            with signals_deferred(Received()):
                self.record.end("FAILED")
        except Exception as error:  # the error being raised matters more; say why the run stays open
            print(f"dlrun: run {self.record.run_id} could not be marked FAILED ({type(error).__name__}: {error}).",
                  file=sys.stderr)

    def _close(self, status: str, upload: bool = True) -> None:
        """Upload the checkpoints that exist (`upload`) and end the run, with signals held back: a signal
        here would leave it RUNNING. One that came meanwhile is answered now: the user asked to stop."""
        received = Received()
        with signals_deferred(received):
            try:
                if upload:
                    self.record.log_checkpoints(self.checkpoint_dir)
            finally:
                self.record.end(status)
        if received.count and status != "KILLED":  # a KILLED run's own Interrupted follows
            raise Interrupted(f"interrupted while run {self.record.run_id} was closed; it is marked {status}.")

    def _killed(self, when: str) -> Interrupted:
        """The run closed as KILLED; the error that says where its checkpoint is and how to continue."""
        self._close("KILLED")
        run_id, last = self.record.run_id, self.checkpoint_dir / "last.ckpt"
        if last.is_file():
            return Interrupted(f"interrupted {when}; run {run_id} is marked KILLED, its checkpoint is {last}. "
                               f"Continue it: dlrun resume {run_id}")
        return Interrupted(f"interrupted {when}; run {run_id} is marked KILLED, with no checkpoint yet. "
                           f"Continue it from step 0: dlrun resume {run_id}")

    def _not_stored(self, model_uri: str | None) -> TrainingFailed:
        """Training worked but the artifact store refused its files (disk full, no permission): the run is
        FAILED, since a FINISHED run must hold its checkpoints and model; the weights stay on this disk."""
        record = self.record
        kept = [f"checkpoints in {self.checkpoint_dir.resolve()}"]
        if model_uri and Path(model_uri).is_dir():
            kept.append(f"the model in {model_uri}")
        return TrainingFailed(
            f"training finished, but the run's artifacts could not be stored: {record.refusal} "
            f"(not stored: {', '.join(record.refused)}). Run {record.run_id} is marked FAILED. The trained weights "
            f"are on this disk: {'; '.join(kept)}. Once {record.artifact_location()} takes writes again (free space, "
            f"allow writing, or let the process that locks the store finish), `dlrun resume {record.run_id}` stores "
            "them and marks the run FINISHED.")


def _worker_death(error: Exception, trainer) -> WorkerDied | None:
    """The WorkerDied for torch's error about a dead DataLoader worker during fit, naming what it read."""
    from dlrun.data.streaming import worker_death

    return worker_death(error, getattr(trainer.train_dataloader, "source", None))


@contextmanager
def run_outcome(output_dir: Path) -> Iterator[RunOutcome]:
    """The block of one training run; whatever ends it ends the MLflow run as the table above says.
    Outside fit, SIGTERM stops as Ctrl-C does."""
    outcome = RunOutcome(output_dir)
    try:
        with signals_raise(outcome.signals):
            yield outcome
    except (KeyboardInterrupt, SystemExit) as stop:
        stopped = outcome.stopped(stop)
        if stopped is stop:
            raise
        raise stopped from None
    except DataError as error:
        if not outcome.run_exists or outcome.record.ended:  # bad input before the run, or already closed
            raise
        raise outcome.unreadable_data(error) from None
    except BaseException:
        outcome.fail_if_open()
        raise
