# braintumor developer targets. `make install demo` sets up and runs the demo; `make test` runs the tests.
PY ?= python
DEMO := demo_data/brain-tumor-mri-sample

.PHONY: install demo test lint bench

install:
	$(PY) -m pip install -e ".[train,serve,onnx,export,scanners,dev]"

demo:
	braintumor train --arch customnet --data $(DEMO)/train --batch-size 16 --name demo
	braintumor evaluate latest --data $(DEMO)/test --name demo

test:
	$(PY) -m pytest -q

lint:
	$(PY) -m ruff check braintumor tests benchmarks

bench:
	$(PY) benchmarks/run_all.py
