"""Which ``pip install`` extra brings an optional package, for a one-line error instead of a traceback."""

# module -> (what to call it, the extra that installs it)
EXTRAS = {"matplotlib": ("matplotlib", "plots"), "dask": ("dask.distributed", "distributed"),
          "distributed": ("dask.distributed", "distributed")}


def missing_package_message(error):
    """A ModuleNotFoundError as one line naming the extra, or None when it is not an optional package."""
    name = (getattr(error, "name", None) or "").split(".")[0]
    if name not in EXTRAS:
        return None
    package, extra = EXTRAS[name]
    return f'{package} is not installed; install it with: pip install "minigrad[{extra}]"'
