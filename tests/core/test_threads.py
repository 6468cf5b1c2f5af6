"""Worker threads run torch operators on their own thread; the caller's thread count is left alone."""

import os
import subprocess
import sys
import textwrap

import pytest

from selfee.threads import cpu_count

WORKER = """
    import torch
    from selfee.threads import single_threaded_ops, worker_pool
    {setup}
    before = torch.get_num_threads()
    with worker_pool(1, "t") as pool:
        took = pool.submit(single_threaded_ops).result()
        inside = pool.submit(torch.get_num_threads).result()
    print(took, before, inside, torch.get_num_threads())
"""


def run_fresh(setup: str) -> list[str]:
    # A fresh interpreter, whose thread counts the test chooses.
    code = textwrap.dedent(WORKER.format(setup=setup))
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                          env={**os.environ, "OMP_NUM_THREADS": "2"}).stdout.split()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the OpenMP runtime is found through /proc")
def test_worker_threads_get_one_thread_and_the_caller_keeps_its_own():
    assert run_fresh("") == ["True", "2", "1", "2"]


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the OpenMP runtime is found through /proc")
def test_workers_get_one_thread_also_after_set_num_threads():
    # torch would set each new thread's count to the process-wide one at its first call into torch
    assert run_fresh("torch.set_num_threads(2)") == ["True", "2", "1", "2"]


def test_cpu_count_is_positive():
    assert cpu_count() >= 1
