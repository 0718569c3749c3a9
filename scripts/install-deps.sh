#!/usr/bin/env bash
# Installs the Debian packages the build and tests need, only if some are missing.
# The CUDA toolkit (headers + nvcc) is expected at /usr/local/cuda (or $CUDA_HOME); the shim needs
# only its headers to build, and no GPU.
set -euo pipefail
pkgs=(cmake make g++ binutils python3 libboost-dev libspdlog-dev libfmt-dev libgtest-dev
      libcli11-dev nlohmann-json3-dev libncurses-dev tmux procps util-linux ccache
      libyaml-cpp-dev dpkg-dev pkgconf python3-yaml)
pkgs+=(libcpp-httplib-dev prometheus)  # kvctl metrics serves HTTP; its test scrapes it for real
pkgs+=(clang-format clang-tidy)  # scripts/lint.sh (run by scripts/test.sh)
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "install-deps: installing ${missing[*]}"
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
cuda_home="${CUDA_HOME:-/usr/local/cuda}"
if [ ! -f "$cuda_home/include/cuda.h" ]; then
  echo "install-deps: CUDA toolkit headers not found at $cuda_home/include/cuda.h." >&2
  echo "  Install the CUDA toolkit (12.x or 13.x) or set CUDA_HOME to its folder." >&2
  exit 1
fi
