#!/usr/bin/env bash
# The GPU check of the Triton backend in one command, from any folder:
#   bash bench/gpu_check.sh [--smoke] [options of bench/gpu_check.py]
# Pigeon is imported from the checkout (PYTHONPATH), so nothing needs installing.
# PYTHON picks the interpreter (default python3), e.g. PYTHON=.venv/bin/python.
# exec: an outer time limit's SIGTERM reaches the script itself, which then kills the
# stage it is running and still writes the report and the table.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
export PYTHONPATH=.
export PYTHONUNBUFFERED=1
exec "${PYTHON:-python3}" bench/gpu_check.py "$@"
