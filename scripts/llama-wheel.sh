#!/usr/bin/env bash
# Builds llama-cpp-python as one portable wheel, kept under pip's cache directory, and
# installs it into the venv whose pip is $PIP; `copy DIR` puts the wheel in DIR instead
# (`make image` does, for the image).
#
# pip's own build of the sdist compiles llama.cpp with -march=native: the library then
# runs only on CPUs like the build host's (elsewhere: SIGILL), and on Intel AMX hosts it
# puts weights in llama.cpp's AMX buffers, whose matmul crashes (README, "CPUs"). This is
# the build llama.cpp's releases make: GGML_NATIVE=OFF, the CPU backend as loadable
# modules (GGML_BACKEND_DL), one per CPU generation (GGML_CPU_ALL_VARIANTS), the best one
# for the CPU loaded at start. One variant of upstream's list is left out: sapphirerapids,
# the only one with AMX code. Sapphire Rapids and later Xeons take zen4's variant
# (AVX-512 with VNNI and BF16) instead, and keep llama.cpp's CPU weight repacking.
# LLAVA_BUILD=OFF: neve serves no images, so the multimodal library is not built.
#
# The wheel's version carries a local tag, 0.3.36+neve.<hash of this recipe>: pip can
# never take a native wheel from its cache for it, `pip list` shows which build a venv
# holds, and a changed recipe builds anew. A fresh build takes about 8 minutes here.
set -euo pipefail

version=0.3.36
variants_out="sapphirerapids"
cmake_args="-DGGML_NATIVE=OFF -DGGML_BACKEND_DL=ON -DGGML_CPU_ALL_VARIANTS=ON \
-DCMAKE_INSTALL_BINDIR=llama_cpp/lib -DLLAVA_BUILD=OFF"
# CMAKE_INSTALL_BINDIR: the variants install there; beside libggml in the package is
# where the engine loads them from (llama.cpp alone looks beside python and in the cwd).

pip=${PIP:-.venv/bin/pip}
recipe=$(echo "$version $variants_out $cmake_args" | sha256sum | cut -c1-10)
local_version="$version+neve.$recipe"
cache_root=$("$pip" cache dir 2>/dev/null || echo "${XDG_CACHE_HOME:-$HOME/.cache}/pip")
wheels="$cache_root/neve-wheels/llama-cpp-python-$local_version"

if ! compgen -G "$wheels/llama_cpp_python-$local_version-*.whl" >/dev/null; then
    echo "building llama-cpp-python $local_version (portable, once: about 8 minutes)"
    work=$(mktemp -d)
    trap 'rm -rf "$work"' EXIT
    "$pip" download --quiet --no-binary :all: --no-deps -d "$work" "llama-cpp-python==$version"
    tar -xzf "$work/llama_cpp_python-$version.tar.gz" -C "$work"
    src="$work/llama_cpp_python-$version"
    sed -i "s/^__version__ = \"$version\"$/__version__ = \"$local_version\"/" \
        "$src/llama_cpp/__init__.py"
    grep -q "^__version__ = \"$local_version\"$" "$src/llama_cpp/__init__.py" \
        || { echo "llama-wheel: llama_cpp/__init__.py has no version line to tag" >&2; exit 1; }
    variant_list="$src/vendor/llama.cpp/ggml/src/CMakeLists.txt"
    for variant in $variants_out; do
        grep -qE "^ *ggml_add_cpu_backend_variant\($variant " "$variant_list" \
            || { echo "llama-wheel: no CPU variant $variant in $variant_list" >&2; exit 1; }
        sed -i -E "/^ *ggml_add_cpu_backend_variant\($variant /d" "$variant_list"
    done
    CMAKE_ARGS="$cmake_args" CMAKE_BUILD_PARALLEL_LEVEL=$(nproc) \
        "$pip" wheel --quiet --no-deps --no-cache-dir -w "$work/out" "$src"
    mkdir -p "$wheels"
    mv "$work"/out/llama_cpp_python-*.whl "$wheels/"
fi

case "${1:-install}" in
    install) "$pip" install --quiet --find-links "$wheels" "llama-cpp-python==$local_version" ;;
    copy) mkdir -p "$2" && cp "$wheels"/llama_cpp_python-*.whl "$2/" ;;
    *) echo "usage: scripts/llama-wheel.sh [install | copy DIR]" >&2; exit 2 ;;
esac
