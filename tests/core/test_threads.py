"""Worker threads run torch operators on their own thread; the caller's thread count is left alone."""

import os
import subprocess
import sys
import textwrap

import pytest

from selfee.threads import cpu_count, single_threaded_ops, worker_pool


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the OpenMP runtime is found through /proc")
def test_worker_threads_get_one_thread_and_the_caller_keeps_its_own():
    # A fresh interpreter: the tests' conftest calls torch.set_num_threads, which binds every thread.
    code = textwrap.dedent("""
        import torch
        from selfee.threads import worker_pool
        before = torch.get_num_threads()
        with worker_pool(1, "t") as pool:
            inside = pool.submit(torch.get_num_threads).result()
        print(before, inside, torch.get_num_threads())
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={**os.environ, "OMP_NUM_THREADS": "2"}).stdout.split()
    assert out == ["2", "1", "2"]


def test_single_threaded_ops_says_whether_it_took_and_cpu_count_is_positive():
    with worker_pool(1, "test-threads") as pool:
        took = pool.submit(single_threaded_ops).result()
    assert took in (True, False)  # False here: conftest called torch.set_num_threads
    assert cpu_count() >= 1
