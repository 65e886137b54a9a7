#!/usr/bin/env bash
# RecBole in its own virtual environment (benchmarks/.venv-recbole, gitignored), for bench_training.py's peer figures.
#
# torch is installed first and pinned (the CPU wheel; a range could pull GBs of CUDA wheels), then RecBole pinned.
# RecBole 1.2.1 still uses np.float_ (removed in NumPy 2), so NumPy stays below 2 here. It is installed without
# its optional heavy dependencies (ray, which only its hyper-parameter search imports, thop, plotly): the
# benchmark builds datasets, models and batches through RecBole's own API and never calls those parts.
#
# Usage: bash benchmarks/setup_recbole.sh   (PYTHON=python3.11 to choose the interpreter)
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
VENV="$HERE/.venv-recbole"
PY="${PYTHON:-python3}"
PIP=(-m pip install -q --disable-pip-version-check)

test -x "$VENV/bin/python" || "$PY" -m venv "$VENV"
"$VENV/bin/python" "${PIP[@]}" "torch==2.13.0"
"$VENV/bin/python" "${PIP[@]}" --no-deps "recbole==1.2.1"
# RecBole's import-time dependencies (its setup.py list without ray, thop and plotly)
"$VENV/bin/python" "${PIP[@]}" "numpy<2" scipy pandas tqdm "colorlog==4.7.2" "colorama==0.4.4" scikit-learn \
    pyyaml tensorboard tabulate texttable psutil
"$VENV/bin/python" -c "import recbole, torch, numpy; print('recbole', recbole.__version__, 'torch', torch.__version__, 'numpy', numpy.__version__)"
