#!/usr/bin/env bash
# Set up everything quarry needs on a fresh Debian/Ubuntu machine: Debian
# packages, then a .venv in the repo root with quarry installed editable.
# Safe to run again: each step skips what is already there.
set -euo pipefail
cd "$(dirname "$0")/.."

# 1. Debian packages (scripts/apt-packages.txt; one per line).
missing=()
while read -r pkg; do
  [[ -z "$pkg" || "$pkg" == \#* ]] && continue
  dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg")
done < scripts/apt-packages.txt
if ((${#missing[@]})); then
  sudo=""; [[ $(id -u) -ne 0 ]] && command -v sudo >/dev/null && sudo="sudo"
  echo "setup: apt-get install ${missing[*]}"
  apt_install() { DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "$@"; }
  if ! { $sudo apt-get update -qq && apt_install "${missing[@]}"; }; then
    # One package this distribution lacks must not keep the others out (the gui DAG falls back
    # from chromium-headless-shell to chromium, for one): try them one by one.
    for pkg in "${missing[@]}"; do
      apt_install "$pkg" || echo "setup: WARNING: could not install $pkg (not root? not in this distribution?); continuing" >&2
    done
  fi
fi

# 2. The virtual environment.
PY=${PYTHON:-python3}
[[ -x .venv/bin/python ]] || "$PY" -m venv .venv
pip=(.venv/bin/python -m pip install -q --disable-pip-version-check)

# 3. torch first, pinned: anything that asks for plain `torch` would otherwise
#    pull the newest release with several GB of CUDA packages. Where the
#    machine's pip finds a CPU build of this version (as on our build
#    machines), that is what installs. Override with QUARRY_TORCH="torch==X".
"${pip[@]}" "${QUARRY_TORCH:-torch==2.13.0}"

# 4. quarry itself (editable) with its test tools, under the same pins.
"${pip[@]}" -c scripts/constraints.txt -e ".[all,dev]"
echo "setup: done ($(.venv/bin/python -c 'import quarry.dags.cli, importlib.metadata as m; print("quarry", m.version("quarry"))'))"
