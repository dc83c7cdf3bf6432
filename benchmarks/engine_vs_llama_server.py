"""neve's in-process engine against llama.cpp's own llama-server, side by side in one run:
same GGUF (the model neve serves by default), same workload (streaming chat, --tokens
tokens each with ignore_eos), same threads, rounds interleaved server by server and level
by level so a shared machine's noise falls on both alike.

llama-server is built once from the llama.cpp that llama-cpp-python's sdist vendors (the
version neve runs), cached outside the repository (--cache, default ~/.cache/neve); or
pass --llama-server PATH. Building takes minutes on 2 cores; it is not part of make test.
It is built for this CPU (native) and runs with its best working settings here: on a CPU
with AMX that is --no-repack (its AMX weight buffers crash; the output says so). neve runs
its portable build and its defaults.

Prints per concurrency both tok/s (medians of the rounds) and neve / llama-server (the
median of each neve round's ratio to the llama-server round beside it), then the lowest
ratio of the three, and last the ratio at 8 concurrent (target >= 0.95 at every level).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import subprocess
import tarfile
import tempfile
from pathlib import Path

from neve.config import Settings
from neve.doctor import host_cpu
from neve.engine import catalog
from processes import NEVE, free_port, start
from side_by_side import llama_cpp_sdist, measure, report


def build_llama_server(cache: Path) -> Path:
    """llama-server from the vendored llama.cpp of the installed llama-cpp-python's sdist,
    built once into `cache`."""
    version, sdist = llama_cpp_sdist(cache / "llama-cpp-python")
    home = cache / f"llama-server-{version}"
    binary = home / "build" / "bin" / "llama-server"
    if binary.exists():
        return binary
    home.mkdir(parents=True, exist_ok=True)
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
    # llama-server is built for this CPU (native): on an AMX host it puts weights in AMX
    # buffers and dies on its first request, so there its best working setting is without
    # repacking. neve runs its own default (weight_repack auto).
    _, amx = host_cpu()
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
                        *(["--no-repack"] if amx else []),
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
    if amx:
        print(
            f"this CPU has AMX ({' '.join(amx)}): llama-server runs with --no-repack, since its "
            "AMX weight buffers crash on the first request (llama.cpp issue 20824)"
        )
    ratios = report(results, "neve", "llama-server")
    low = min(ratios, key=ratios.__getitem__)
    print(f"lowest neve / llama-server: {ratios[low]:.2f} at {low} concurrent (target >= 0.95)")
    print(f"neve / llama-server at 8 concurrent: {ratios[8]:.2f} (target >= 0.95)")


if __name__ == "__main__":
    main()
