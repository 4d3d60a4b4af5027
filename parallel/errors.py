"""What can stop a training run, each as its own exception type.

A script maps them to exit codes (see ``scripts/train_parallel.py``): a user's
mistake is a ``ValueError`` (exit 2); a failure while training is one of these.
"""


class LossTypeError(ValueError):
    """``loss_fn`` returned something other than a ``Value``: the user's mistake, told in one
    line (no worker traceback) by every backend, at the first sample that shows it."""


class WorkerError(RuntimeError):
    """A worker raised an exception; the message carries the worker's own traceback."""

    def __init__(self, message, remote_traceback=""):
        super().__init__(message + ("\n\nWorker traceback:\n" + remote_traceback if remote_traceback else ""))
        self.remote_traceback = remote_traceback


class SampleCrashError(WorkerError):
    """One sample killed a worker process several times in a row."""

    def __init__(self, index, crashes, exitcode):
        super().__init__(f"Sample {index} killed a worker {crashes} times in a row "
                         f"(last exit code {exitcode}); stopping")
        self.index = index
        self.crashes = crashes


class SampleTimeoutError(WorkerError):
    """One sample ran past the sample timeout in several workers in a row."""

    def __init__(self, index, times, timeout):
        super().__init__(f"Sample {index} ran past the {timeout:g} s sample timeout {times} times in a row; "
                         f"stopping")
        self.index = index
        self.times = times
        self.timeout = timeout


class NonFiniteError(ArithmeticError):
    """A loss or gradient became NaN or infinite; the step was not applied."""

    def __init__(self, step, index, what):
        where = f" at sample {index}" if index is not None else ""
        super().__init__(f"Non-finite {what} in step {step}{where}; the step was not applied")
        self.step = step
        self.index = index


class TrainingInterrupted(Exception):
    """SIGINT or SIGTERM arrived; the model holds the last completed step."""

    def __init__(self, signum):
        import signal
        super().__init__(f"Interrupted by {signal.Signals(signum).name}")
        self.signum = signum
        self.exit_code = 128 + signum  # the shell's convention: 130 for SIGINT, 143 for SIGTERM
