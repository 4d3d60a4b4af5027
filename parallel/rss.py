"""The one reader of a process's resident set size (RSS), for the run's memory monitor and the backends."""


def rss_bytes(pid=None):
    """RSS of process ``pid`` (this process by default) in bytes; 0 once the process is gone."""
    import psutil
    try:
        return psutil.Process(pid).memory_info().rss
    except (psutil.Error, ValueError, TypeError):
        return 0
