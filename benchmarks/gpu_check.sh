#!/usr/bin/env bash
# Prepared GPU check for one NVIDIA H200 (issue 9, item 4); finishes in <= 8 minutes there. Prepared, not yet run on a GPU.
#
#   bash benchmarks/gpu_check.sh [--dry-run] [--json PATH] [--threads N] [--max-minutes M]
#
# It installs the project without the network (pip install --no-deps --no-build-isolation -e .) and torchattacks from
# benchmarks/wheels/ (pure-Python wheels), unless they are importable already. Where the editable install fails for an
# old or missing setuptools, it installs the setuptools wheel kept there and tries again; where pip cannot install at all
# (an externally managed Python) it puts the repository and the torchattacks wheel on PYTHONPATH instead. Then it runs
# benchmarks/gpu_check.py with the same arguments (see its docstring for the four sections). The JSON goes to --json,
# else $OUT/gpu_check.json when $OUT is set (the device machine's output folder), else $TMPDIR.
# Python: $PYTHON, else .venv/bin/python when there is one, else python3.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT=$PWD
if [ -n "${PYTHON:-}" ]; then PY=$PYTHON; elif [ -x .venv/bin/python ]; then PY=$ROOT/.venv/bin/python; else PY=python3; fi

importable() {   # is module $1 importable from outside the repository, and (for the project) this checkout's copy?
  (cd / && "$PY" - "$1" "$ROOT" <<'PYEOF' 2>/dev/null
import importlib, os, sys
m = importlib.import_module(sys.argv[1])
ok = sys.argv[1] != 'randsmooth_nb' or os.path.realpath(m.__file__).startswith(os.path.realpath(sys.argv[2]) + os.sep)
sys.exit(0 if ok else 1)
PYEOF
  )
}

t0=$(date +%s)
if ! importable randsmooth_nb; then
  echo "gpu_check.sh: installing the project (offline): pip install --no-deps --no-build-isolation -e ."
  install() { "$PY" -m pip install -q --no-index --no-deps --no-build-isolation -e . ; }
  if ! install; then   # an old or missing setuptools (bdist_wheel, PEP 660): bring the wheel kept here, then try again
    st=$(ls "$ROOT"/benchmarks/wheels/setuptools-*.whl 2>/dev/null | head -n 1 || true)
    if [ -z "$st" ] || ! "$PY" -m pip install -q --no-index --no-deps "$st" || ! install; then
      echo "gpu_check.sh: pip could not install it; using PYTHONPATH=$ROOT instead"
      export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"
    fi
  fi
fi
if ! importable torchattacks; then
  whl=$(ls "$ROOT"/benchmarks/wheels/torchattacks-*.whl 2>/dev/null | head -n 1 || true)
  if [ -z "$whl" ]; then
    echo "gpu_check.sh: no torchattacks wheel in benchmarks/wheels/: section (b) will have no reference time"
  elif ! "$PY" -m pip install -q --no-index --no-deps "$whl"; then
    echo "gpu_check.sh: pip could not install $whl; importing it from the wheel (PYTHONPATH)"
    export PYTHONPATH="$whl${PYTHONPATH:+:$PYTHONPATH}"
  fi
fi
if ! importable randsmooth_nb; then echo "gpu_check.sh: randsmooth_nb is still not importable with $PY" >&2; exit 2; fi
echo "gpu_check.sh: setup took $(( $(date +%s) - t0 )) s; running benchmarks/gpu_check.py $*"
exec "$PY" benchmarks/gpu_check.py "$@"
