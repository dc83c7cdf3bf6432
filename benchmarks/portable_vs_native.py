"""neve with its portable llama.cpp (scripts/llama-wheel.sh: CPU variants chosen at start,
the build every venv and image gets) against neve with a native build of the same source
(pip's default: -march=native for this CPU alone), side by side in one run: same model,
same workload (streaming chat, --tokens tokens each with ignore_eos), rounds interleaved.

The native build is made once from the same sdist (minutes) and kept outside the
repository (--cache, default ~/.cache/neve); its hub runs with it first on PYTHONPATH.
Both hubs run their default weight_repack. Prints per concurrency both tok/s and
portable / native (median of paired rounds), and last the lowest of those ratios
(target >= 0.95 at 1, 8 and 16 concurrent).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from processes import NEVE, free_port, start
from side_by_side import llama_cpp_sdist, measure, report


def native_build(cache: Path) -> Path:
    """A folder holding llama_cpp built by pip's default (native) recipe, made once."""
    version, sdist = llama_cpp_sdist(cache / "llama-cpp-python")
    target = cache / f"llama-cpp-python-{version}-native"
    if (target / "llama_cpp").exists():
        return target
    print(f"building llama-cpp-python {version} natively into {target} (minutes)", flush=True)
    with tempfile.TemporaryDirectory() as wheels:
        env = {**os.environ, "CMAKE_ARGS": "-DLLAVA_BUILD=OFF",
               "CMAKE_BUILD_PARALLEL_LEVEL": str(os.cpu_count() or 1)}  # fmt: skip
        pip = [sys.executable, "-m", "pip"]
        subprocess.run([*pip, "wheel", "--no-deps", "--no-cache-dir", "-w", wheels, str(sdist)],
                       env=env, check=True)  # fmt: skip
        wheel = next(Path(wheels).glob("*.whl"))
        subprocess.run([*pip, "install", "--no-deps", "--target", str(target), str(wheel)],
                       check=True)  # fmt: skip
    return target


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, default=96, help="tokens per request")
    parser.add_argument("--repeats", type=int, default=10, help="rounds per level and build")
    parser.add_argument("--cache", type=Path, default=Path.home() / ".cache" / "neve")
    args = parser.parse_args()

    native = native_build(args.cache)
    builds = {"portable": {}, "native": {"PYTHONPATH": str(native)}}
    processes = []
    with tempfile.TemporaryDirectory() as data_dir:
        try:
            bases = {}
            for name, env in builds.items():
                port = free_port()
                argv = [*NEVE, "serve", "--port", str(port), "--data-dir", f"{data_dir}/{name}"]
                # Each hub's output kept beside the cache, to say which one failed and why.
                log = (args.cache / f"hub-{name}.log").open("wb")
                processes.append(start(argv, f"http://127.0.0.1:{port}/ready", env=env, log=log))
                bases[name] = f"http://127.0.0.1:{port}"
            for name, env in builds.items():
                doctor = subprocess.run(
                    [*NEVE, "doctor", "--no-generate"], env={**os.environ, **env},
                    capture_output=True, text=True, check=True,
                )  # fmt: skip
                cells = [line.split("│") for line in doctor.stdout.splitlines()]
                variant = next(c[2] for c in cells if len(c) > 2 and c[1].strip() == "CPU variant")
                print(f"{name}: CPU variant {' '.join(variant.split())}")
            try:
                results = asyncio.run(measure(bases, args.tokens, args.repeats))
            except Exception:
                for name, process in zip(builds, processes, strict=True):
                    print(
                        f"{name} hub: exit code {process.poll()}, see {args.cache}/hub-{name}.log"
                    )
                raise
        finally:
            for process in processes:
                process.terminate()
                process.wait()

    print(f"{args.tokens} tokens per request, {args.repeats} interleaved rounds per level")
    ratios = report(results, "portable", "native")
    low = min(ratios, key=ratios.__getitem__)
    print(f"lowest portable / native: {ratios[low]:.2f} at {low} concurrent (target >= 0.95)")


if __name__ == "__main__":
    main()
