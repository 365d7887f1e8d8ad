"""Memory a cross-section build freed goes back to the OS before training (parallel_dqn.data.memory).

The first run on new data held the loader's freed working memory through all of training (pyarrow's pool and
glibc's heap keep freed pages): 3.2 GB at the first clock step of 100 stocks x a year of minute bars, 1.2 GB
for the same run from the cache. The check here frees memory the same way in a child process (many
mid-sized arrays, as aligning and featurising leave behind, with a few kept between them so the heap cannot
simply shrink from the top) and asks that the call hands most of it back.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest

from parallel_dqn.data.memory import _glibc

CHILD = textwrap.dedent("""
    import json
    import numpy as np
    import pyarrow as pa
    from parallel_dqn.data.memory import release_freed_memory

    def rss_mb():
        return int(open("/proc/self/statm").read().split()[1]) * 4096 / 2**20

    start = rss_mb()
    chunks = [np.ones(12_000) for _ in range(8_000)]  # 96 KB each, under glibc's mmap threshold: the heap
    table = pa.table({"x": np.arange(20_000_000, dtype=np.float64)})  # 160 MB in pyarrow's pool
    kept = chunks[::100]  # every 100th stays: the heap cannot shrink from its top
    del chunks, table
    freed = rss_mb()
    release_freed_memory()
    print(json.dumps({"start": start, "freed": freed, "released": rss_mb()}))
""")


@pytest.mark.skipif(sys.platform != "linux" or _glibc() is None, reason="malloc_trim is glibc's; RSS from /proc")
def test_memory_freed_after_a_build_goes_back_to_the_os():
    done = subprocess.run([sys.executable, "-c", CHILD], capture_output=True, text=True, check=True)
    mb = json.loads(done.stdout)
    held = mb["freed"] - mb["start"]
    assert held > 500, f"the child should hold its freed memory before the call: {mb}"  # ~770 MB + 160 MB freed
    assert mb["released"] - mb["start"] < 0.2 * held, f"most of it should be back with the OS: {mb}"
