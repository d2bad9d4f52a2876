"""The benchmark harness behind ``pigeon bench``.

A *case* is one system × model × dataset × mode (``infer``: a forward pass under
``torch.no_grad``; ``train``: forward and backward). Each case runs in its own
``python -m pigeon.bench.worker`` subprocess, so its peak memory is its own and an
out-of-memory, a crash or a hang in one system becomes that case's result (``OOM``,
``error: ...``, ``timeout``) instead of ending the run.

Where things are:

* :mod:`pigeon.bench.systems`: the systems (Pigeon's backends, DGL, PyG, the
  reference layers eager and under ``torch.compile``), how each builds a model with
  the reference's weights, and which of them compute the reference's maths;
* :mod:`pigeon.bench.dgl_ops`: the same-maths DGL baseline, built from DGL's
  operators;
* :mod:`pigeon.bench.worker`: one case: load, build, check against
  :mod:`pigeon.reference`, warm up, time, measure peak memory;
* :mod:`pigeon.bench.harness`: the case list (with the structure sweep's points), the
  subprocesses, memory and time limits, the machine;
* :mod:`pigeon.bench.provenance`: what every results file records of where its
  numbers come from (commit, versions, threads, tuning cache, other load);
* :mod:`pigeon.bench.report`: the table, the headline, the structure sweep, Markdown,
  the PNG chart, ``--compare``;
* :mod:`pigeon.bench.floor`: the machine's measured matmul rate and memory
  bandwidth, the FLOPs and bytes of Pigeon's kernels per case and of the machine
  floor, and the floors they give.

This module imports nothing heavy, so the command line can validate names first.
"""

from pigeon.bench.harness import Case, Config, run_cases
from pigeon.bench.systems import MODELS, MODES, available_systems

__all__ = ["Case", "Config", "run_cases", "MODELS", "MODES", "available_systems"]
