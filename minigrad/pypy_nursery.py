"""PyPy's young generation at the size this engine runs fastest with, without anyone setting a variable.

PyPy sizes its nursery from the cache size the CPU reports, once, when the process starts
(the ``PYPY_GC_NURSERY`` variable overrides it); no call changes it afterwards. Some virtual
CPUs report hundreds of MB, and then every sample of the engine allocates into memory that
is not in any cache: measured 1.45 ms per sample instead of 1.06 ms with 8 MB, and processes
of 1.4 GB instead of 133 MB. So:

* ``import minigrad`` sets the variable for every process started from this one (workers,
  their forkserver, any subprocess), unless it is set already;
* a script that computes in its own process calls ``restart_with_tuned_nursery()`` first
  thing: under PyPy without the variable it starts itself again, with it, in place.
"""
import os
import platform
import sys

NURSERY = "8MB"
_STARTED_WITH = os.environ.get("PYPY_GC_NURSERY")  # what this process's GC was sized by, if anything


def _is_pypy():
    return platform.python_implementation() == "PyPy"


def size_for_children():
    """Processes started from this one get the tuned nursery, unless ``PYPY_GC_NURSERY`` says otherwise."""
    if _is_pypy():
        os.environ.setdefault("PYPY_GC_NURSERY", NURSERY)


def restart_with_tuned_nursery():
    """Under PyPy with the nursery PyPy chose, run this script again with the tuned one (``os.execv``).

    Call it before the script does anything else: the new process starts from the top. It
    returns at once on CPython, when ``PYPY_GC_NURSERY`` was set before this process started,
    and in an interactive session.
    """
    if not _is_pypy() or _STARTED_WITH is not None or sys.flags.interactive:
        return
    main = sys.modules.get("__main__")
    if not getattr(main, "__file__", None) or not os.path.isfile(sys.argv[0]):
        return  # -c, stdin or an embedded interpreter: nothing to start again
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(sys.executable, [sys.executable] + sys.argv, dict(os.environ, PYPY_GC_NURSERY=NURSERY))
