# Every target sets itself up from a fresh clone: a venv in .venv, the pinned packages, then the work.
PYTHON  ?= $(shell command -v python3.11 || command -v python3)
VENV    ?= .venv
BIN     := $(VENV)/bin
PROFILE ?= mini
JOBS    ?= 2      # chapters side by side, one torch thread each (see README, "Same seed, same numbers")
CHAPTER ?=

.PHONY: setup book test lab run check clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c constraints.txt -e ".[book,test,lab]"
	# facenet-pytorch's metadata pins torch<2.3 and numpy<2: installed without its dependencies
	$(BIN)/python -m pip install --quiet --no-deps facenet-pytorch==2.6.0
	touch $@

book: setup            ## run every chapter on $(PROFILE), then build the HTML book in _build/html
	$(BIN)/dfbook book --profile $(PROFILE) --jobs $(JOBS)

test: setup            ## the test suite, one file per worker process, as many workers as cores
	$(BIN)/python -m pytest -n auto --dist loadfile

run: setup             ## one chapter: make run CHAPTER=univfd [PROFILE=full]
	$(BIN)/dfbook run $(CHAPTER) --profile $(PROFILE)

check: setup           ## compare the result records with notebooks/expected/*.yaml
	$(BIN)/dfbook check --profile $(PROFILE)

lab: setup             ## JupyterLab on the chapter sources (open a .md with "Open With > Notebook")
	$(BIN)/jupyter lab --no-browser $(if $(filter 0,$(shell id -u)),--allow-root,) notebooks/

clean:                 ## remove build products (keeps the venv and the _cache of generated data)
	rm -rf _build book/chapters
