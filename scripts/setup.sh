#!/usr/bin/env bash
# Set up graft's Python + LibTorch environment.
#
#   scripts/setup.sh            # create/refresh the venv and .graft-env/ links
#
# What it does:
#   1. Creates a virtualenv at $GRAFT_VENV
#      (default: ${XDG_CACHE_HOME:-$HOME/.cache}/graft/venv) and installs the
#      pinned python/requirements.txt into it (with python/constraints.txt).
#      A stamp file in the venv records a hash of those files; when it matches
#      and torch is in place, nothing is installed and the script takes seconds.
#   2. Points the repo-local .graft-env/ at it:
#        .graft-env/torch   -> <venv>/lib/pythonX.Y/site-packages/torch
#                              (LibTorch: include/ + lib/; .cargo/config.toml
#                              sets LIBTORCH to this for torch-sys)
#        .graft-env/venv    -> <venv>
#        .graft-env/python  small wrapper that execs <venv>/bin/python
#                              (a symlink to a venv's python would not activate
#                              the venv: CPython looks for pyvenv.cfg next to the
#                              path it was started by)
#
# Environment:
#   GRAFT_VENV          venv location (see above)
#   GRAFT_PYTHON        interpreter used to create the venv (default: python3)
#   GRAFT_VENV_REBUILD  =1: delete and recreate the venv from scratch
#   GRAFT_PIP_CACHE     =1: let pip use its download cache (off by default: the
#                       torch wheel alone is ~4.6 GB)
#
# Needs only python3 (with the venv module) and network access to PyPI.
set -euo pipefail

log() { printf '[setup] %s\n' "$*" >&2; }
die() { printf '[setup] error: %s\n' "$*" >&2; exit 1; }

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd -P)"
req="$repo_root/python/requirements.txt"
con="$repo_root/python/constraints.txt"
[[ -f "$req" ]] || die "missing $req"
[[ -f "$con" ]] || die "missing $con"

venv="${GRAFT_VENV:-${XDG_CACHE_HOME:-$HOME/.cache}/graft/venv}"
base_python="${GRAFT_PYTHON:-python3}"
stamp="$venv/.graft-requirements.sha256"
env_dir="$repo_root/.graft-env"
torch_version="2.11.0"  # must match tch/torch-sys 0.24.0

hash_inputs() {
    # Hash of the pin files plus the interpreter version: a change to any of
    # them means the venv must be refreshed.
    {
        cat "$req" "$con"
        "$base_python" -c 'import sys; print(sys.version)'
    } | sha256sum | cut -d' ' -f1
}

command -v "$base_python" >/dev/null 2>&1 || die "$base_python not found (set GRAFT_PYTHON)"
"$base_python" -c 'import sys; sys.exit(0 if sys.version_info[:2] >= (3, 11) else 1)' \
    || die "$base_python is $("$base_python" -V 2>&1); need Python >= 3.11"

venv_ok() {
    [[ -x "$venv/bin/python" ]] && "$venv/bin/python" -c 'import sys; sys.exit(sys.prefix == sys.base_prefix)' 2>/dev/null
}

remove_venv() {
    # Only ever delete something that is recognisably a venv (or empty): GRAFT_VENV
    # might point somewhere it should not.
    if [[ -f "$venv/pyvenv.cfg" ]] || [[ -d "$venv" && -z "$(ls -A "$venv")" ]]; then
        rm -rf "$venv"
    else
        die "$venv exists but is not a virtualenv; refusing to delete it (check GRAFT_VENV)"
    fi
}

# Serialise concurrent runs that share a venv.
mkdir -p "$(dirname "$venv")"
if command -v flock >/dev/null 2>&1; then
    exec 9>"$venv.lock"
    flock 9
fi

if [[ "${GRAFT_VENV_REBUILD:-0}" == 1 && -e "$venv" ]]; then
    log "GRAFT_VENV_REBUILD=1: removing $venv"
    remove_venv
fi

want_hash="$(hash_inputs)"
have_hash="$(cat "$stamp" 2>/dev/null || true)"

if venv_ok && [[ "$want_hash" == "$have_hash" ]] \
    && compgen -G "$venv/lib/python3*/site-packages/torch/lib/libtorch_cpu.so" >/dev/null; then
    log "venv up to date: $venv"
else
    start=$SECONDS
    if ! venv_ok; then
        if [[ -e "$venv" ]]; then
            log "venv at $venv is broken; recreating it"
            remove_venv
        fi
        log "creating venv at $venv ($("$base_python" -V 2>&1))"
        "$base_python" -m venv "$venv" || die "python3 -m venv failed (Debian/Ubuntu: apt-get install python3-venv)"
    else
        log "requirements changed; updating venv at $venv"
    fi
    rm -f "$stamp"

    pip_args=(--disable-pip-version-check --no-input --progress-bar off --only-binary=:all:)
    [[ "${GRAFT_PIP_CACHE:-0}" == 1 ]] || pip_args+=(--no-cache-dir)

    if "$venv/bin/python" -c 'import torch' >/dev/null 2>&1; then
        log "installing pinned requirements..."
    else
        log "installing pinned requirements (torch wheel is ~4.6 GB: a few minutes)..."
    fi
    pip_log="$venv/.graft-pip.log"
    if ! "$venv/bin/python" -m pip install "${pip_args[@]}" \
            -r "$req" -c "$con" >"$pip_log" 2>&1; then
        tail -n 30 "$pip_log" >&2
        die "pip install failed (full log: $pip_log)"
    fi
    "$venv/bin/python" -m pip check >>"$pip_log" 2>&1 \
        || { tail -n 10 "$pip_log" >&2; die "pip check found inconsistent dependencies (log: $pip_log)"; }

    got="$("$venv/bin/python" -c 'import importlib.metadata as m; print(m.version("torch"))')"
    [[ "$got" == "$torch_version" ]] || die "torch $got installed, need $torch_version"

    echo "$want_hash" >"$stamp"
    log "venv ready in $((SECONDS - start))s"
fi

site="$("$venv/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
torch_dir="$site/torch"
[[ -d "$torch_dir/include" && -d "$torch_dir/lib" ]] || die "no LibTorch include/ and lib/ under $torch_dir"

mkdir -p "$env_dir"
ln -sfn "$torch_dir" "$env_dir/torch"
ln -sfn "$venv" "$env_dir/venv"
wrapper="#!/bin/sh
exec \"$venv/bin/python\" \"\$@\""
if [[ -L "$env_dir/python" || "$(cat "$env_dir/python" 2>/dev/null)" != "$wrapper" ]]; then
    rm -f "$env_dir/python"
    printf '%s\n' "$wrapper" >"$env_dir/python"
    chmod +x "$env_dir/python"
fi

log ".graft-env/torch  -> $torch_dir"
log ".graft-env/python -> $venv/bin/python"
log "done (torch $torch_version; LIBTORCH is set by .cargo/config.toml)"
