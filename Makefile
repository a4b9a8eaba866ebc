# ecgqa: two commands on a fresh machine.
#   make demo   create .venv, install, run the main job on the embedded default
#   make test   create/update .venv, install, run the test suite
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip
# learn2learn has no cp311 wheel on PyPI: tools/build_learn2learn.sh builds one here.
WHEELS := wheelhouse
STAMP  := $(VENV)/.ecgqa-installed
SHARED ?= ../shared/data/real
DEMO_OUT ?= out/demo
PYTEST_ARGS ?=

.PHONY: install demo test lint constraints clean

install: $(STAMP)

$(PY):
	$(PYTHON) -m venv $(VENV)

$(WHEELS)/.learn2learn: tools/build_learn2learn.sh constraints.txt | $(PY)
	$(PIP) install -q -c constraints.txt setuptools wheel Cython
	tools/build_learn2learn.sh $(PY)
	touch $@

$(STAMP): pyproject.toml constraints.txt $(WHEELS)/.learn2learn | $(PY)
	$(PIP) install -c constraints.txt --find-links $(WHEELS) -e '.[dev]'
	$(PIP) check
	touch $@

demo: $(STAMP)
	@test -d $(SHARED) || { echo "demo: $(SHARED) not found (the team's shared real records)"; exit 2; }
	$(VENV)/bin/ecgqa info $(SHARED)/ptbxl/00001_lr.hea
	$(VENV)/bin/ecgqa info $(SHARED)/cinc2021/E07509.mat --no-measure --leads limb
	$(VENV)/bin/ecgqa plot $(SHARED)/cinc2021/E07509.hea --out $(DEMO_OUT)/E07509.png
	$(VENV)/bin/ecgqa plot $(SHARED)/ptbxl/00001_lr.hea --fs 500 --out $(DEMO_OUT)/00001_lr.png
	rm -rf $(DEMO_OUT)/synth
	$(VENV)/bin/ecgqa data synth --out $(DEMO_OUT)/synth --n-ecgs 300 --seed 0
	$(VENV)/bin/ecgqa plot $(DEMO_OUT)/synth/records/00000/00001 --out $(DEMO_OUT)/synth-00001.png
	$(VENV)/bin/ecgqa data stats --qa $(DEMO_OUT)/synth --n-way 2 --k-shot 2 --q-query 2
	$(PY) eval/speed.py --layouts question_first
	@echo "demo: wrote $(DEMO_OUT)/E07509.png, $(DEMO_OUT)/00001_lr.png, $(DEMO_OUT)/synth/"

test: $(STAMP)
	$(PY) -m pytest -q $(PYTEST_ARGS)

lint: $(STAMP)
	$(VENV)/bin/ruff check ecgqa tests

# Re-pin the install path after changing dependencies in pyproject.toml.
constraints: $(STAMP)
	{ sed -n '1,3p' constraints.txt; $(PIP) freeze --all --exclude-editable | grep -v -e '^pip==' -e '^ecgqa'; } > constraints.txt.new
	mv constraints.txt.new constraints.txt

clean:
	rm -rf $(VENV) $(WHEELS) out .pytest_cache
