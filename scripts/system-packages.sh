#!/usr/bin/env bash
# Installs the system packages neve needs, when they are missing: Python's venv module
# and a C++ compiler (llama-cpp-python builds from source); with `test`, also the servers
# the test suite starts (Prometheus, PostgreSQL), the browser its UI tests drive
# (Debian's Chromium), qemu-user (the engine under emulated CPUs), npm (Claude Code, a
# client under test), HAProxy (the balancer in front of a fleet of hubs), nftables and
# iproute2 (hosts of a Ray cluster made of network namespaces), the Debian Reference's
# HTML (the reranker's training script, run small) and Compose,
# whose parser checks deploy/compose.yaml (without the
# container engine Debian recommends with it). Uses apt-get as root, or through sudo;
# elsewhere it says what to install and stops.
set -euo pipefail

python=${PYTHON:-python3}
missing=()
bare=()  # installed without their recommended packages
"$python" -c "import venv, ensurepip" 2>/dev/null || missing+=("python3-venv")
command -v g++ >/dev/null || missing+=("g++")
command -v make >/dev/null || missing+=("make")
if [ "${1:-}" = "test" ]; then
    command -v prometheus >/dev/null || missing+=("prometheus")
    compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null || missing+=("postgresql")
    command -v chromium >/dev/null || missing+=("chromium")
    command -v qemu-x86_64 >/dev/null || missing+=("qemu-user")
    command -v npm >/dev/null || missing+=("npm")
    command -v docker-compose >/dev/null || bare+=("docker-compose")
    command -v haproxy >/dev/null || [ -x /usr/sbin/haproxy ] || missing+=("haproxy")
    command -v nft >/dev/null || [ -x /usr/sbin/nft ] || missing+=("nftables")
    command -v ip >/dev/null || [ -x /usr/sbin/ip ] || missing+=("iproute2")
    [ -d /usr/share/debian-reference ] || missing+=("debian-reference-en")
fi
[ $((${#missing[@]} + ${#bare[@]})) -eq 0 ] && exit 0

echo "neve needs system packages: ${missing[*]} ${bare[*]}"
if ! command -v apt-get >/dev/null; then
    echo "install them with your system's package manager, then run make again" >&2
    exit 1
fi
sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"
$sudo apt-get update -qq
export DEBIAN_FRONTEND=noninteractive
[ ${#missing[@]} -eq 0 ] || $sudo apt-get install -y -qq "${missing[@]}"
[ ${#bare[@]} -eq 0 ] || $sudo apt-get install -y -qq --no-install-recommends "${bare[@]}"
