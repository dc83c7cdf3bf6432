"""The engine on any x86-64 CPU: the CPU variant llama.cpp loaded fits this CPU, the
weights go where `weight_repack` says (read from llama.cpp's own buffer listing), never to
the AMX buffers whose matmul crashes, and the installed llama.cpp answers under emulated
CPUs other than this one (Debian's qemu-user)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import llama_cpp as lc
import pytest

from neve.doctor import host_cpu
from neve.engine import catalog, ggml
from neve.engine.batching import LlamaModel
from tests.conftest import neve, offline_env

SHIPPED = catalog.resolve("smollm2", model_file=None, models_dir=Path("unused")).path

# ggml's names for what a variant is compiled for, and the kernel's flags for them.
CPUINFO_FLAG = {
    "SSE3": "pni", "SSSE3": "ssse3", "AVX": "avx", "AVX2": "avx2", "F16C": "f16c",
    "FMA": "fma", "BMI2": "bmi2", "AVX_VNNI": "avx_vnni", "AVX512": "avx512f",
    "AVX512_VBMI": "avx512vbmi", "AVX512_VNNI": "avx512_vnni", "AVX512_BF16": "avx512_bf16",
    "AMX_INT8": "amx_int8",
}  # fmt: skip


def _load(path: Path, weight_repack: ggml.WeightRepack) -> LlamaModel:
    return LlamaModel(path, n_seq=1, n_cells=256, n_batch=64, n_threads=2,
                      weight_repack=weight_repack)  # fmt: skip


@pytest.fixture(scope="module")
def q4_0(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The shipped model requantized to Q4_0, a type llama.cpp repacks on x86 with AVX2
    (its Q4_1 weights are not repacked there)."""
    out = tmp_path_factory.mktemp("q4_0") / "smollm2-q4_0.gguf"
    params = lc.llama_model_quantize_default_params()
    params.ftype = lc.LLAMA_FTYPE_MOSTLY_Q4_0
    params.allow_requantize = True
    assert lc.llama_model_quantize(str(SHIPPED).encode(), str(out).encode(), params) == 0
    return out


def test_the_loaded_cpu_variant_is_one_this_cpu_runs() -> None:
    cpu = ggml.cpu_backend()
    flags = set(Path("/proc/cpuinfo").read_text().split())
    assert cpu.library.startswith("libggml-cpu-"), cpu.library  # neve's portable build
    compiled = [f for f in cpu.features if f in CPUINFO_FLAG]
    assert "SSE3" in compiled or cpu.variant == "x64"
    missing = [f for f in compiled if CPUINFO_FLAG[f] not in flags]
    assert missing == [], f"{cpu.variant} needs {missing}, which this CPU lacks"
    # The best variant was chosen: one that uses AVX2 wherever the CPU has it.
    if "avx2" in flags:
        assert "AVX2" in compiled


def test_auto_keeps_every_extra_buffer_off_where_llama_cpp_lists_amx() -> None:
    amx_build = ggml.CpuBackend("libggml-cpu.so", ("AVX512", "AMX_INT8"), ("AMX", "CPU_REPACK"))
    plain = ggml.CpuBackend("libggml-cpu-haswell.so", ("AVX2",), ("CPU_REPACK",))
    assert ggml.extra_buffers("auto", amx_build) is False
    assert ggml.extra_buffers("auto", plain) is True
    assert ggml.extra_buffers("on", amx_build) is True
    assert ggml.extra_buffers("off", plain) is False
    assert amx_build.variant == "native" and plain.variant == "haswell"


def test_no_weight_ever_goes_to_the_amx_buffers_by_default() -> None:
    _, amx = host_cpu()
    if not amx:
        pytest.skip("this CPU reports no AMX (no amx_* flag in /proc/cpuinfo)")
    model = _load(SHIPPED, "auto")
    try:
        assert model.weight_buffers, "llama.cpp listed no weight buffers"
        assert ggml.AMX not in model.weight_buffers, model.weight_buffers
    finally:
        model.close()


@pytest.mark.parametrize(("mode", "repacked"), [("auto", True), ("off", False)])
def test_weight_repack_decides_where_the_weights_go(
    q4_0: Path, mode: ggml.WeightRepack, repacked: bool
) -> None:
    if "CPU_REPACK" not in ggml.cpu_backend().extra_buffers:
        pytest.skip("llama.cpp lists no repacking for this CPU")
    model = _load(q4_0, mode)
    try:
        assert ("CPU_REPACK" in model.weight_buffers) is repacked, model.weight_buffers
        assert ggml.AMX not in model.weight_buffers
        assert sum(model.weight_buffers.values()) > 50  # MiB: every weight is listed
    finally:
        model.close()


SMALL = ["--set", "max_num_seqs=1", "--set", "kv_cache_tokens=64", "--set", "max_model_len=64"]


def test_doctor_reports_what_runs_and_answers() -> None:
    ran = neve("doctor", "--max-tokens", "4", *SMALL)
    assert ran.returncode == 0, ran.stderr
    cpu = ggml.cpu_backend()
    assert f"{cpu.variant}  ({cpu.library})" in ran.stdout
    assert "auto: extra buffers used" in ran.stdout
    assert "Paris" in ran.stdout


# --- other CPUs, emulated by Debian's qemu-user (its TCG has AVX2, not AVX-512) ----------


def _emulated(cpu: str, *argv: str) -> subprocess.CompletedProcess[str]:
    qemu = shutil.which("qemu-x86_64")
    assert qemu, "qemu-x86_64 is missing: scripts/system-packages.sh test installs it"
    return subprocess.run([qemu, "-cpu", cpu, *argv], env=offline_env(), capture_output=True,
                          text=True, timeout=300)  # fmt: skip


@pytest.mark.parametrize(
    ("cpu", "variant"),
    [("Haswell-noTSX", "haswell"), ("Nehalem", "sse42")],  # AVX2; x86-64-v2, no AVX at all
)
def test_the_installed_llama_cpp_answers_under_an_emulated_cpu(cpu: str, variant: str) -> None:
    ran = _emulated(cpu, sys.executable, "-m", "neve", "doctor", "--max-tokens", "2", *SMALL)
    assert ran.returncode == 0, ran.stdout + ran.stderr[-3000:]
    assert f"{variant}  (libggml-cpu-{variant}.so)" in ran.stdout, ran.stdout
    assert "Paris" in ran.stdout, ran.stdout


def test_a_baseline_x86_64_cpu_gets_the_baseline_variant() -> None:
    """On x86-64-v1 (qemu64: SSE2, no SSE4) NumPy 2.x, which llama-cpp-python imports,
    dies of SIGILL (its own baseline is x86-64-v2), so no model can be asked there. What
    can be shown is llama.cpp's part: it loads the x64 variant and registers a CPU device."""
    probe = (
        "import ctypes, sys; lib = sys.argv[1]; "
        "ggml = ctypes.CDLL(lib + '/libggml.so.0'); "
        "ggml.ggml_backend_load_all_from_path(lib.encode()); "
        "assert ggml.ggml_backend_dev_count() > 0; "
        "print(*sorted({l.split('/')[-1] for l in open('/proc/self/maps') if 'libggml-cpu' in l}))"
    )
    ran = _emulated("qemu64", sys.executable, "-c", probe, str(ggml.LIB_DIR))
    assert ran.returncode == 0, ran.stderr[-3000:]
    assert ran.stdout.split() == ["libggml-cpu-x64.so"]
