"""A pytest plugin for ``bench/gpu_check.py``: it loads it with ``-p gpu_check_pytest``.

Each test's start and each of its reports (setup, call, teardown) are appended as JSON
lines to ``$GPU_CHECK_EVENTS`` as they happen, so the driver knows what finished and
which test was running even when pytest is killed or dies. A test that runs longer
than ``$GPU_CHECK_TEST_LIMIT_S`` seconds ends pytest: ``faulthandler`` writes every
thread's traceback to ``$GPU_CHECK_EVENTS.hung`` and exits from a thread of its own,
which works where no Python code runs any more (a kernel that never ends, a compiler
that never returns). The driver then starts pytest again without that test.
"""

from __future__ import annotations

import faulthandler
import json
import os

import pytest

_files: dict = {}


def pytest_configure(config) -> None:
    path = os.environ["GPU_CHECK_EVENTS"]
    _files["events"] = open(path, "a", encoding="utf-8")
    _files["hung"] = open(path + ".hung", "w", encoding="utf-8")


def _event(**fields) -> None:
    events = _files["events"]
    events.write(json.dumps(fields) + "\n")
    events.flush()


def pytest_collectreport(report) -> None:
    if report.failed:
        _event(event="collect_error", nodeid=report.nodeid, message=report.longreprtext.strip()[-1000:])


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item, nextitem):
    _event(event="start", nodeid=item.nodeid)
    faulthandler.dump_traceback_later(float(os.environ["GPU_CHECK_TEST_LIMIT_S"]), exit=True, file=_files["hung"])
    try:
        yield
    finally:
        faulthandler.cancel_dump_traceback_later()


def pytest_runtest_logreport(report) -> None:
    crash = getattr(report.longrepr, "reprcrash", None)
    message = crash.message if crash is not None else report.longreprtext.strip()
    _event(event="report", nodeid=report.nodeid, when=report.when, outcome=report.outcome,
           xfail=hasattr(report, "wasxfail"), seconds=round(report.duration, 3),
           message=message[:500] if report.failed else None)
