# rpnkit developer commands. `make run` and `make test` set up .venv on first use.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.rpnkit-installed

.PHONY: setup run test test-slow lint bench compare paper tabular cov clean

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip >/dev/null 2>&1 || true
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e ".[dev]"
	@touch $(STAMP)

setup: $(STAMP)

run: setup
	$(PY) -m rpnkit run

lint: setup
	$(PY) -m ruff check src tests benchmarks examples

test: setup lint
	$(PY) -m pytest -q

# all catalog pairs under torch.compile(fullgraph=True) and DDP, and other long tests (~4 min)
test-slow: setup
	$(PY) -m pytest -q -m slow

# long experiment scripts (tens of minutes on 2 cores); see benchmarks/results/*.md
paper: setup
	$(PY) benchmarks/paper.py $(BENCH_ARGS)

tabular: setup
	$(PY) benchmarks/tabular.py $(BENCH_ARGS)

cov: setup
	$(PY) -m pytest -q --cov=rpnkit --cov-report=term

# speed benchmarks, paired interleaved rounds with spreads (results: benchmarks/results/):
# structured-vs-materialised, then KAN against the GEMM floor and peers, optimizer step,
# symmetric Taylor and evaluation memory. Peers and the "before" checkout are optional:
#   git archive <rev> src | tar -x -C /tmp/before; pip install --no-deps pykan;
#   efficient-kan's src/efficient_kan copied to /tmp/peers (fetched for measurement only)
BEFORE ?= /tmp/before/src
PEERS  ?= /tmp/peers
bench: setup
	$(PY) benchmarks/structured.py --device cpu $(BENCH_ARGS)
	$(PY) benchmarks/kan_floor.py --before $(BEFORE) --peers $(PEERS) $(BENCH_ARGS)

# speed of this checkout against another revision, side by side in one run:
#   git worktree add /tmp/before <rev>; make compare BEFORE=/tmp/before/src
compare: setup
	$(PY) benchmarks/compare_revisions.py --before $(BEFORE) $(BENCH_ARGS)

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache build dist src/*.egg-info
