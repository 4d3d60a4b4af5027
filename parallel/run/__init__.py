"""The run machinery behind ``DataParallelTrainer.fit(out=...)``: the run folder and its CSV logs
(``files``), the checkpoint a run resumes from (``checkpoint``), the progress bar (``progress``),
the memory monitor (``memory``), the pictures (``plots``) and the loop that ties them (``loop``).
"""
from .checkpoint import last_checkpoint_note, read_run_checkpoint, restore, save_run_checkpoint
from .files import (CHECKPOINT_NAME, CsvLog, RunFolderError, RunWriteError, new_run_folder, prepare_run_folder,
                    read_csv)
from .loop import Run
from .memory import MemoryMonitor
from .progress import Progress, note

__all__ = ["Run", "RunFolderError", "RunWriteError", "CsvLog", "CHECKPOINT_NAME", "prepare_run_folder",
           "read_csv", "read_run_checkpoint", "restore", "save_run_checkpoint", "MemoryMonitor", "Progress",
           "note", "new_run_folder", "last_checkpoint_note"]
