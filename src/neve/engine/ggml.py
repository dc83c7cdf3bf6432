"""What llama.cpp runs on: its CPU backend, the variant of it this CPU got, where the
weights are kept, and its log.

neve's build of llama.cpp (scripts/llama-wheel.sh) carries its CPU backend as one module
per CPU generation (`libggml-cpu-haswell.so`, ...). `load_backends` has llama.cpp load
the best one for this CPU from the package's own folder: left alone, llama.cpp looks
beside the python executable and in the working directory, finds nothing there, and no
model loads. A build with the backend linked in (pip's own, made for the build host's
CPU) has it registered already, and is left as it is.

Every figure here is llama.cpp's own: the features the loaded variant was compiled for,
the extra weight buffer types its CPU device lists (CPU_REPACK: weights re-laid for
wider SIMD loads; AMX: Intel's tile units), and the buffers a model's weights went to,
from its load log. `extra_buffers` decides from that listing whether a model may use
them: the AMX buffers' matmul crashes on Sapphire Rapids hosts (llama.cpp issue 20824),
so `auto` keeps all extra buffers off wherever llama.cpp lists AMX's.
"""

from __future__ import annotations

import ctypes
import functools
import logging
import re
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import llama_cpp as lc
from llama_cpp.llama_cpp import _lib as libllama

log = logging.getLogger("neve.engine")

LIB_DIR = Path(lc.__file__).parent / "lib"
AMX = "AMX"
WeightRepack = Literal["auto", "on", "off"]

_CPU_DEVICE = 0  # GGML_BACKEND_DEVICE_TYPE_CPU
_VOID_P = ctypes.c_void_p


def _c(name: str, restype: type | None, *argtypes: type) -> Any:
    # Looked up through libllama's handle, so from the libggml it links: a wheel holds
    # libggml.so and libggml.so.0 as two files, two libraries with a registry each, and
    # llama-cpp-python's own `_ggml` module opens the one libllama does not use.
    fn = getattr(libllama, name)
    fn.restype, fn.argtypes = restype, list(argtypes)
    return fn


_reg_count = _c("ggml_backend_reg_count", ctypes.c_size_t)
_load_all_from_path = _c("ggml_backend_load_all_from_path", None, ctypes.c_char_p)
_dev_by_type = _c("ggml_backend_dev_by_type", _VOID_P, ctypes.c_int)
_dev_backend_reg = _c("ggml_backend_dev_backend_reg", _VOID_P, _VOID_P)
_reg_proc_address = _c("ggml_backend_reg_get_proc_address", _VOID_P, _VOID_P, ctypes.c_char_p)
_buft_name = _c("ggml_backend_buft_name", ctypes.c_char_p, _VOID_P)


class _Feature(ctypes.Structure):
    _fields_ = [("name", ctypes.c_char_p), ("value", ctypes.c_char_p)]


class _DlInfo(ctypes.Structure):
    _fields_ = [
        ("dli_fname", ctypes.c_char_p),
        ("dli_fbase", _VOID_P),
        ("dli_sname", ctypes.c_char_p),
        ("dli_saddr", _VOID_P),
    ]


_GetFeatures = ctypes.CFUNCTYPE(ctypes.POINTER(_Feature), _VOID_P)
_GetExtraBufts = ctypes.CFUNCTYPE(ctypes.POINTER(_VOID_P), _VOID_P)


@dataclass(frozen=True)
class CpuBackend:
    """llama.cpp's CPU backend as loaded in this process."""

    library: str  # the file it was loaded from, e.g. libggml-cpu-haswell.so
    features: tuple[str, ...]  # what the loaded code was compiled for: AVX2, AMX_INT8, ...
    extra_buffers: tuple[str, ...]  # weight buffer types besides plain CPU memory

    @property
    def variant(self) -> str:
        """The CPU generation the code was built for; `native` for a one-CPU build."""
        match = re.fullmatch(r"libggml-cpu-(.+)\.so", self.library)
        return match.group(1) if match else "native"


@functools.cache
def load_backends() -> None:
    """Load llama.cpp's backends from the package's folder, unless they are linked in."""
    route_logs()
    if not _reg_count():
        _load_all_from_path(str(LIB_DIR).encode())
    if not _dev_by_type(_CPU_DEVICE):
        raise RuntimeError(
            f"llama.cpp has no CPU backend for this CPU (looked in {LIB_DIR}): reinstall "
            "llama-cpp-python with scripts/llama-wheel.sh"
        )


@functools.cache
def cpu_backend() -> CpuBackend:
    load_backends()
    dev = _dev_by_type(_CPU_DEVICE)
    reg = _dev_backend_reg(dev)
    features: list[str] = []
    library = "?"
    address = _reg_proc_address(reg, b"ggml_backend_get_features")
    if address:
        at = _GetFeatures(address)(reg)
        for i in range(64):
            if not at[i].name:
                break
            value = (at[i].value or b"").decode()
            name = at[i].name.decode()
            features.append(name if value == "1" else f"{name}={value}")
        library = _library_of(address)
    buffers: list[str] = []
    address = _reg_proc_address(reg, b"ggml_backend_dev_get_extra_bufts")
    if address:
        bufts = _GetExtraBufts(address)(dev)
        i = 0
        while bufts and bufts[i]:
            buffers.append(_buft_name(bufts[i]).decode())
            i += 1
    return CpuBackend(library, tuple(features), tuple(buffers))


def _library_of(address: int) -> str:
    """The file name of the shared library holding `address` (dladdr)."""
    info = _DlInfo()
    dladdr = ctypes.CDLL(None).dladdr
    dladdr.argtypes = [_VOID_P, ctypes.POINTER(_DlInfo)]
    if not dladdr(address, ctypes.byref(info)) or not info.dli_fname:
        return "?"
    return Path(info.dli_fname.decode()).name


def extra_buffers(mode: WeightRepack, backend: CpuBackend) -> bool:
    """Whether a model's weights may go to llama.cpp's extra buffer types (`weight_repack`)."""
    if mode == "auto":
        return AMX not in backend.extra_buffers
    return mode == "on"


# --- llama.cpp's log -----------------------------------------------------------------------

_loading = threading.local()
_BUFFER_LINE = re.compile(r"load_tensors:\s+(\S+) model buffer size =\s+([\d.]+) MiB")


@functools.cache
def route_logs() -> Any:
    """Send llama.cpp's chatter to our logger at debug level instead of stderr. Once per
    process, and never freed: llama.cpp keeps one global callback, so a callback owned by
    one model would dangle once that model is gone while another still logs (a crash
    when a process closes the second of two models)."""

    @lc.llama_log_callback
    def callback(level: int, text: bytes, _user: ctypes.c_void_p) -> None:
        line = text.decode("utf-8", "replace").rstrip()
        lines = getattr(_loading, "lines", None)
        if lines is not None:
            lines.append(line)
        if log.isEnabledFor(logging.DEBUG):
            log.debug("llama.cpp: %s", line)

    lc.llama_log_set(callback, ctypes.c_void_p(0))
    return callback


@contextmanager
def weight_buffers() -> Iterator[dict[str, float]]:
    """Collects, while a model loads on this thread, the buffers llama.cpp put its weights
    in (its `model buffer size` lines): buffer type -> MiB."""
    route_logs()
    found: dict[str, float] = {}
    lines: list[str] = []
    _loading.lines = lines
    try:
        yield found
    finally:
        del _loading.lines
        for line in lines:
            match = _BUFFER_LINE.search(line)
            if match:
                found[match.group(1)] = found.get(match.group(1), 0.0) + float(match.group(2))
