"""neve's in-process engine against llama.cpp's own llama-server, side by side in one run:
same GGUF (the model neve serves by default), same workload (streaming chat, --tokens
tokens each with ignore_eos), same threads, rounds interleaved server by server and level
by level so a shared machine's noise falls on both alike.

llama-server is built once from the llama.cpp that llama-cpp-python's sdist vendors (the
version neve runs), cached outside the repository (--cache, default ~/.cache/neve); or
pass --llama-server PATH. Building takes minutes on 2 cores; it is not part of make test.

Prints per concurrency both tok/s (medians of the rounds) and neve / llama-server (the
median of each neve round's ratio to the llama-server round beside it), then the lowest
ratio of the three, and last the ratio at 8 concurrent (target >= 0.95 at every level).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import statistics
import subprocess
import sys
import tarfile
import tempfile
from importlib import metadata
from pathlib import Path

import httpx

from engine_concurrency import round_at
from neve.config import Settings
from neve.engine import catalog
from processes import NEVE, free_port, start

LEVELS = (1, 8, 16)
# Both servers get the same request, sampling named in full: OpenAI's meaning, which neve
# serves (the whole distribution at the temperature). llama-server would otherwise cut it
# to its defaults (top_k 40, top_p 0.95, min_p 0.05), a cheaper and different sampling.
SAMPLING = {"top_k": 0, "top_p": 1.0, "min_p": 0.0}


def build_llama_server(cache: Path) -> Path:
    """llama-server from the vendored llama.cpp of the installed llama-cpp-python's sdist,
    built once into `cache`."""
    version = metadata.version("llama_cpp_python")
    home = cache / f"llama-server-{version}"
    binary = home / "build" / "bin" / "llama-server"
    if binary.exists():
        return binary
    home.mkdir(parents=True, exist_ok=True)
    sdist = next(home.glob("llama_cpp_python-*.tar.gz"), None)
    if sdist is None:
        print(f"downloading llama-cpp-python {version}'s source to {home}", flush=True)
        subprocess.run(
            [
                sys.executable,
                "-m",
                "pip",
                "download",
                "--no-deps",
                "--no-binary",
                ":all:",
                "-d",
                str(home),
                f"llama-cpp-python=={version}",
            ],
            check=True,
        )
        sdist = next(home.glob("llama_cpp_python-*.tar.gz"))
    source = home / "llama.cpp"
    if not source.exists():
        with tarfile.open(sdist) as tar, tempfile.TemporaryDirectory(dir=home) as tmp:
            top = f"llama_cpp_python-{version}/vendor/llama.cpp/"
            members = [m for m in tar.getmembers() if m.name.startswith(top)]
            tar.extractall(tmp, members=members, filter="data")
            shutil.move(Path(tmp) / top, source)
    print(f"building llama-server in {home / 'build'} (minutes)", flush=True)
    build = home / "build"
    subprocess.run(
        [
            "cmake",
            "-S",
            str(source),
            "-B",
            str(build),
            "-G",
            "Ninja",
            "-DCMAKE_BUILD_TYPE=Release",
            "-DLLAMA_CURL=OFF",
            "-DLLAMA_BUILD_TESTS=OFF",
            "-DLLAMA_BUILD_EXAMPLES=OFF",
        ],
        check=True,
    )
    subprocess.run(
        [
            "cmake",
            "--build",
            str(build),
            "--target",
            "llama-server",
            "-j",
            str(os.cpu_count() or 1),
        ],
        check=True,
    )
    return binary


async def measure(
    bases: dict[str, str], tokens: int, repeats: int
) -> dict[str, dict[int, list[float]]]:
    results = {name: {level: [] for level in LEVELS} for name in bases}
    limits = httpx.Limits(max_connections=64)
    clients = {
        name: httpx.AsyncClient(base_url=b, timeout=600, limits=limits) for name, b in bases.items()
    }
    try:
        for http in clients.values():
            await round_at(http, 2, 8)  # warm-up
        order = list(clients.items())
        for _ in range(repeats):
            for level in LEVELS:
                for name, http in order:
                    rate = await round_at(http, level, tokens, SAMPLING)
                    results[name][level].append(rate)
            order.reverse()  # so neither server always runs first at a level
    finally:
        for http in clients.values():
            await http.aclose()
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, default=96, help="tokens per request")
    parser.add_argument("--repeats", type=int, default=10, help="rounds per level and server")
    parser.add_argument("--cache", type=Path, default=Path.home() / ".cache" / "neve")
    parser.add_argument("--llama-server", type=Path, help="a llama-server binary to use")
    args = parser.parse_args()

    binary = args.llama_server or build_llama_server(args.cache)
    settings = Settings()
    model = catalog.resolve(
        settings.model,
        model_file=settings.model_file,
        models_dir=settings.models_path,
        hf_token=None,
    ).path
    threads = str(os.cpu_count() or 1)
    seqs, cells = settings.max_num_seqs, settings.kv_cache_tokens
    processes = []
    with tempfile.TemporaryDirectory() as data_dir:
        try:
            ports = {"neve": free_port(), "llama-server": free_port()}
            processes.append(
                start(
                    [*NEVE, "serve", "--port", str(ports["neve"]), "--data-dir", data_dir],
                    f"http://127.0.0.1:{ports['neve']}/ready",
                )
            )
            processes.append(
                start(
                    [
                        str(binary),
                        "-m",
                        str(model),
                        "--host",
                        "127.0.0.1",
                        "--port",
                        str(ports["llama-server"]),
                        "-np",
                        str(seqs),
                        "--kv-unified",
                        "-c",
                        str(cells),
                        "-t",
                        threads,
                        "-tb",
                        threads,
                    ],
                    f"http://127.0.0.1:{ports['llama-server']}/health",
                )
            )
            bases = {name: f"http://127.0.0.1:{port}" for name, port in ports.items()}
            results = asyncio.run(measure(bases, args.tokens, args.repeats))
        finally:
            for process in processes:
                process.terminate()
                process.wait()

    print(
        f"{model.name}, {args.tokens} tokens per request, {threads} threads, "
        f"{args.repeats} interleaved rounds per level and server (median shown)"
    )
    ratios = {}
    for level in LEVELS:
        ours, theirs = (statistics.median(results[n][level]) for n in ("neve", "llama-server"))
        # Each neve round against the llama-server round run beside it: this machine's
        # speed drifts by a tenth and more within a minute, which falls on both rounds of
        # a pair alike and so cancels in its ratio (the medians' ratio keeps it).
        pairs = zip(results["neve"][level], results["llama-server"][level], strict=True)
        ratios[level] = statistics.median(a / b for a, b in pairs)
        spread = ", ".join(
            f"{n} {min(results[n][level]):.0f}-{max(results[n][level]):.0f}"
            for n in ("neve", "llama-server")
        )
        print(
            f"  {level:>2} concurrent: neve {ours:6.1f} tok/s, llama-server {theirs:6.1f} tok/s"
            f" (medians' ratio {ours / theirs:.2f}; rounds: {spread}),"
            f" neve / llama-server, paired rounds {ratios[level]:.2f}"
        )
    low = min(ratios, key=ratios.__getitem__)
    print(f"lowest neve / llama-server: {ratios[low]:.2f} at {low} concurrent (target >= 0.95)")
    print(f"neve / llama-server at 8 concurrent: {ratios[8]:.2f} (target >= 0.95)")


if __name__ == "__main__":
    main()
