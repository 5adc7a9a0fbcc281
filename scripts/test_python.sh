#!/usr/bin/env bash
# The Python package (python/): build it, install it and run its tests. Called by scripts/test.sh
# after `cargo test`, whose compiled crates and `deepviz` binary it reuses: python/ is a member
# of the root's workspace, so maturin's build (dev profile, the root's target folder) resolves
# the same features as `cargo test` did and compiles only the module itself. The tests compare
# every method with target/debug/deepviz (DEEPVIZ_CLI).
#
# The venv (DEEPVIZ_PY_VENV, default .toolchain/python-venv, git-ignored) is made once with the
# pinned tools below; running again reuses it. pytest finding no test is a failure.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh
need_cargo
venv=${DEEPVIZ_PY_VENV:-.toolchain/python-venv}
case $venv in /*) ;; *) venv=$PWD/$venv ;; esac
pins="maturin==1.16.0 numpy==2.4.6 pytest==9.2.0"
if [ ! -x "$venv/bin/python" ]; then
  python3 -m venv "$venv"
fi
if [ "$(cat "$venv/.deepviz-pins" 2>/dev/null)" != "$pins" ]; then
  # shellcheck disable=SC2086
  "$venv/bin/pip" install --quiet --disable-pip-version-check $pins
  echo "$pins" >"$venv/.deepviz-pins"
fi
echo "== python package: build and install (maturin, dev profile) =="
export PATH="$venv/bin:$PATH"  # the pinned maturin, for pip's build backend
# --no-build-isolation: the pinned maturin of the venv builds it (pyproject.toml pins the same
# one for a plain `pip install ./python`)
rlibs() { stat -c '%n %Y' target/debug/deps/libdeepviz-*.rlib 2>/dev/null | sort; }
before=$(rlibs)
CARGO_TARGET_DIR="$PWD/target" MATURIN_PEP517_ARGS="--profile dev --locked" \
  "$venv/bin/pip" install ${DEEPVIZ_PIP_VERBOSE:+-v} --quiet --disable-pip-version-check --no-build-isolation --no-deps --force-reinstall ./python
if [ -n "$before" ] && [ "$(rlibs)" != "$before" ]; then
  # not an error (the build is right), but CI time: see the comment in python/Cargo.toml
  echo "note: maturin compiled deepviz again instead of reusing cargo test's (features or environment differ)" >&2
fi
echo "== python package: pytest =="
cli=${DEEPVIZ_CLI:-$PWD/target/debug/deepviz}
[ -x "$cli" ] || cargo build --locked --profile test --bin deepviz
rc=0
DEEPVIZ_CLI=$cli "$venv/bin/pytest" python/tests -m "not gpu" -q -p no:cacheprovider || rc=$?
if [ "$rc" -eq 5 ]; then
  echo "error: pytest collected no test in python/tests" >&2
  exit 1
fi
exit "$rc"
