"""C shared libraries built from source, cached on disk, loaded with ctypes.

The generated kernels of the cpu backend (:mod:`pigeon.runtime.cpu_backend`) and the
graph-layout helpers (:mod:`pigeon.native`) are C compiled with the system compiler. A
library is cached under ``PIGEON_CACHE_DIR``, named by hashes of its source and flags,
of the host CPU and of the compiler's version, and loaded once per process.
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import os
import platform
import shutil
import struct
import subprocess
import tempfile
import warnings
from pathlib import Path

from pigeon.paths import cache_dir

__all__ = ["CFLAGS", "CompilerError", "build_library", "compiler_available"]

CFLAGS = ("-O3", "-march=native", "-fPIC", "-shared", "-fopenmp", "-std=c11")


class CompilerError(RuntimeError):
    """The C compiler failed or is missing."""


def _compiler_on_path() -> str | None:
    """``$CC`` (default ``cc``), or None where it is not on PATH."""
    cc = os.environ.get("CC", "cc")
    return cc if shutil.which(cc) is not None else None


def _no_compiler(reason: str) -> CompilerError:
    cc = os.environ.get("CC", "cc")
    return CompilerError(f"backend='cpu' needs a C compiler with OpenMP {reason}, and `{cc}` was not found on "
                         "PATH (set CC to one). backend='torch' runs without a compiler.")


def compiler_available() -> bool:
    """Whether ``$CC`` (default ``cc``) is on PATH."""
    return _compiler_on_path() is not None


_LOADED: dict[str, ctypes.CDLL] = {}   # process-wide: a library is loaded once

# The /proc/cpuinfo fields that say which instructions -march=native may use (x86, Arm,
# RISC-V, POWER); clock speed, bogomips, microcode and core ids change from core to core
# or boot to boot and would only split the cache.
_CPU_FIELDS = ("vendor_id", "cpu family", "model", "model name", "flags", "CPU implementer",
               "CPU architecture", "CPU variant", "CPU part", "Features", "isa", "uarch", "cpu")


@functools.cache
def _cpu_identity() -> str:
    """The host CPU as -march=native sees it: the instruction-set fields of the first
    processor in /proc/cpuinfo, or what :mod:`platform` knows where that file is missing."""
    try:
        first = Path("/proc/cpuinfo").read_text().split("\n\n")[0]
    except OSError:
        return f"{platform.machine()} {platform.processor()}"
    fields = [line.split(":", 1) for line in first.splitlines() if ":" in line]
    kept = [f"{name.strip()}: {value.strip()}" for name, value in fields if name.strip() in _CPU_FIELDS]
    return "\n".join([platform.machine(), *kept])


@functools.cache
def _compiler_version(cc: str) -> str:
    """What ``cc --version`` prints (the compiler's identity and version), probed once per
    compiler and process."""
    result = subprocess.run([cc, "--version"], capture_output=True, text=True)
    if result.returncode != 0:
        raise CompilerError(f"`{cc} --version` failed (exit status {result.returncode}):\n{result.stderr.strip()}")
    return result.stdout.strip()


def _truncated(so_path: Path) -> str | None:
    """Why an ELF library is cut short, or None. The loader maps every segment the
    program headers name, so a truncated library can kill the process with SIGBUS
    rather than fail to load: its headers are checked against the file's size first.
    Not an ELF file (another platform's format, or garbage): left to the loader."""
    data = so_path.read_bytes()
    if not data.startswith(b"\x7fELF"):
        return None
    wide, order = data[4:5] == b"\x02", "<" if data[5:6] == b"\x01" else ">"
    # e_phoff, e_shoff, then e_phentsize, e_phnum, e_shentsize, e_shnum, per ELF class.
    head = struct.Struct(order + ("32xQQ6xHHHH" if wide else "28xII6xHHHH"))
    segment = struct.Struct(order + ("8xQ16xQ" if wide else "4xI8xI"))  # p_offset, p_filesz
    if len(data) < head.size:
        return f"{len(data)} bytes, shorter than an ELF header"
    phoff, shoff, phentsize, phnum, shentsize, shnum = head.unpack_from(data)
    ends = [phoff + phentsize * phnum, shoff + shentsize * shnum]
    if ends[0] <= len(data):
        ends += [sum(segment.unpack_from(data, phoff + i * phentsize)) for i in range(phnum)]
    if max(ends) > len(data):
        return f"{len(data)} bytes where its headers describe {max(ends)}"
    return None


def _digest(*parts: str, size: int) -> str:
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:size]


def build_library(source: str) -> tuple[ctypes.CDLL, Path]:
    """Compile ``source`` (or find it in the cache) and load it.

    A library is named by three hashes: of the source and the flags (the generated C
    names the Pigeon version), of the host CPU (``-march=native`` code may not run on
    another CPU, and a cache in a home directory is shared by every machine of a
    cluster), and of the compiler's version. Without a compiler, the newest library
    built for this source and this CPU, by any compiler, is loaded. A cached library
    that fails to load (truncated by a killed process or a full disk) is rebuilt once.
    """
    folder = cache_dir()
    program = f"pigeon_{_digest(source, *CFLAGS, size=20)}_{_digest(_cpu_identity(), size=12)}"
    cc = _compiler_on_path()
    if cc is not None:
        so_path = folder / f"{program}_{_digest(_compiler_version(cc), size=12)}.so"
    else:
        built = sorted(folder.glob(f"{program}_*.so"), key=lambda path: path.stat().st_mtime)
        if not built:
            raise _no_compiler("to build a library not in the cache")
        so_path = built[-1]
    if str(so_path) in _LOADED:
        return _LOADED[str(so_path)], so_path
    library = None
    if so_path.exists():
        try:
            library = _load(so_path)
        except OSError as error:
            if cc is None:
                raise _no_compiler(f"to rebuild {so_path}, which failed to load ({error})") from error
            warnings.warn(f"the cached library {so_path} failed to load ({error}); rebuilding it", stacklevel=2)
    if library is None:
        _compile(cc, source, so_path)
        try:
            library = _load(so_path)
        except OSError as error:
            raise CompilerError(f"loading {so_path} failed right after compiling it: {error}") from error
    _LOADED[str(so_path)] = library
    return library, so_path


def _load(so_path: Path) -> ctypes.CDLL:
    why = _truncated(so_path)
    if why is not None:
        raise OSError(f"{so_path}: truncated ({why})")
    return ctypes.CDLL(str(so_path))


def _compile(cc: str, source: str, so_path: Path) -> None:
    """Compile ``source`` into ``so_path``. The C file and the library are each written
    under a temporary name and renamed into place, so a concurrent process (a pytest-xdist
    worker, another rank on the machine) sees the whole file or none."""
    folder, c_path = so_path.parent, so_path.with_suffix(".c")
    fd, tmp_c = tempfile.mkstemp(suffix=".c", dir=folder)
    with os.fdopen(fd, "w") as file:
        file.write(source)
    os.replace(tmp_c, c_path)
    fd, tmp = tempfile.mkstemp(suffix=".so", dir=folder)
    os.close(fd)
    result = subprocess.run([cc, *CFLAGS, str(c_path), "-o", tmp, "-lm"], capture_output=True, text=True)
    if result.returncode != 0:
        os.unlink(tmp)
        raise CompilerError(f"compiling {c_path} failed:\n{result.stderr.strip()}")
    os.replace(tmp, so_path)
