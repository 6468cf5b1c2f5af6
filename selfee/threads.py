"""Worker threads whose torch CPU operators run on their own thread only.

torch parallelises a CPU operator over an OpenMP team whose size ``torch.set_num_threads`` sets
for the whole process. Worker threads that each take a share of the work (decoding, augmenting
groups of samples) must not also fork a team per operator: on a few cores the teams contend for
them and spin, and a 2-core machine spent about 60 % more CPU per sample than the work needed.
OpenMP keeps the team size per thread, so a worker sets its own to one through the OpenMP runtime
torch loaded, and the caller's thread (the trainer's, say) keeps all of them.
"""

from __future__ import annotations

import ctypes
import functools
import logging
import os
from concurrent.futures import ThreadPoolExecutor

log = logging.getLogger("selfee")

_RUNTIMES = ("libgomp", "libiomp5", "libomp")


@functools.cache
def _omp_set_num_threads():
    """``omp_set_num_threads`` of the OpenMP runtime loaded in this process, or None."""
    import torch  # loads the runtime torch was built with

    try:
        with open("/proc/self/maps") as f:
            paths = sorted({line.split()[-1] for line in f if any(r in line for r in _RUNTIMES)})
    except OSError:  # not Linux
        return None
    # Other packages may bring their own copy (scikit-learn, OpenCV): torch's own comes first.
    own = os.path.dirname(torch.__file__)
    paths.sort(key=lambda path: not path.startswith(own))
    for path in paths:
        try:
            fn = ctypes.CDLL(path).omp_set_num_threads
        except (OSError, AttributeError):
            continue
        fn.argtypes = [ctypes.c_int]
        fn.restype = None
        return fn
    log.debug("no OpenMP runtime found; worker threads keep torch's thread count")
    return None


def single_threaded_ops() -> bool:
    """Make torch CPU operators called from this thread run on this thread alone (for worker
    threads; the caller's threads keep torch's count). False where the OpenMP runtime cannot be
    reached: the operators then keep using torch's thread count."""
    fn = _omp_set_num_threads()
    if fn is None:
        return False
    import torch

    # torch sets a thread's team size at the thread's first call into it (to the count of
    # torch.set_num_threads, where the process called it): let that happen first, then override it.
    torch.get_num_threads()
    fn(1)
    return torch.get_num_threads() == 1


def cpu_count() -> int:
    """Cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def worker_pool(threads: int, name: str) -> ThreadPoolExecutor:
    """A thread pool whose threads run torch CPU operators single-threaded."""
    return ThreadPoolExecutor(max_workers=threads, thread_name_prefix=name, initializer=single_threaded_ops)
