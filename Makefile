# Each target builds its own virtual environment, so a fresh clone needs only
# python3 (with venv) and make.
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: test bench bench-quick demo gaussianity speed train train-open-set train-reg train-2x train-open-set-supcon train-open-set-supcon-2x train-open-set-rot train-twin train-small train-fashion recipe train-speed clean

# The CIFAR-10 archive of this project's machines, when it is there.
export GAUSSOOD_DATA ?= $(if $(wildcard ../shared/data/cifar10_jpeg_q75.tar.xz),$(abspath ../shared/data),)

$(VENV)/.core: pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e ".[dev]"
	touch $@

$(VENV)/.bench: $(VENV)/.core
	$(BIN)/python -m pip install -q -e ".[dev,bench]"
	touch $@

test: $(VENV)/.core          ## the test suite (fast; slow tests are marked)
	$(BIN)/python -m pytest

# Without the local archive, torchvision downloads the datasets (needs network).
BENCH_ARGS ?= $(if $(GAUSSOOD_DATA),,--download)

bench: $(VENV)/.bench        ## the main job: CIFAR-10 and Fashion-MNIST OOD benchmark (wall time in its JSON)
	$(BIN)/python benchmarks/cifar10_ood.py $(BENCH_ARGS)

bench-quick: $(VENV)/.bench  ## the same on a small budget (one seed, small subsets); run by CI
	$(BIN)/python benchmarks/cifar10_ood.py --quick $(BENCH_ARGS)

gaussianity: $(VENV)/.bench  ## Gaussianity study: paper reproduction, calibration, vs AUROC, Fashion-MNIST, twin; raw vs L2 spaces
	$(BIN)/python benchmarks/gaussianity.py
	$(BIN)/python benchmarks/gaussianity_space.py

demo: $(VENV)/.core          ## synthetic-embedding demo of every scorer (no image data)
	$(BIN)/python benchmarks/synthetic_demo.py

speed: $(VENV)/.bench        ## speed benchmark against numpy, scikit-learn, pytorch-ood; cost of L2 and views
	$(BIN)/python benchmarks/speed.py
	$(BIN)/python benchmarks/speed_views.py

# The CPU recipe of benchmarks/results/cpu_recipe.md; resumable (checkpoints in the work dir).
RECIPE = --threads 1 --model small --resolution 16:0.75,32 --temperature 0.2

train: $(VENV)/.core         ## the CPU encoder: best recipe, 4 h budget on one core (resumable; cifar10-cpu.pt)
	$(BIN)/python benchmarks/train_encoder.py $(RECIPE) --budget-minutes 240 --knn-every 5 \
	  --name cifar10-cpu --work-dir benchmarks/checkpoints/runs/cifar10-cpu

train-open-set: $(VENV)/.core ## CIFAR-10 classes 0-5 encoder, the same recipe and epochs (resumable)
	$(BIN)/python benchmarks/train_encoder.py $(RECIPE) --classes 0-5 --steps 8680 --knn-every 5 \
	  --snapshots --name cifar10-cpu-c0to5 --work-dir benchmarks/checkpoints/runs/cifar10-cpu-c0to5

train-open-set-supcon: $(VENV)/.core ## classes 0-5 with SupCon (labels of the known classes), half the open-set steps (resumable)
	$(BIN)/python benchmarks/train_encoder.py $(RECIPE) --classes 0-5 --steps 4340 --knn-every 5 \
	  --objective supcon --snapshots --name cifar10-cpu-c0to5-supcon \
	  --work-dir benchmarks/checkpoints/runs/cifar10-cpu-c0to5-supcon

train-open-set-supcon-2x: $(VENV)/.core ## the shipped open-set encoder: SupCon at the full open-set steps (8,680; 85 min on one core, resumable)
	$(BIN)/python benchmarks/train_encoder.py $(RECIPE) --classes 0-5 --steps 8680 --knn-every 5 \
	  --objective supcon --snapshots --name cifar10-cpu-c0to5-supcon-2x \
	  --work-dir benchmarks/checkpoints/runs/cifar10-cpu-c0to5-supcon-2x

train-reg: $(VENV)/.core     ## the shipped recipe and steps with the paper's regulariser (resumable; issue 20 item 4)
	$(BIN)/python benchmarks/train_encoder.py $(RECIPE) --steps 17359 --knn-every 5 --snapshots \
	  --norm-weight 0.005 --entropy-weight 0.01 --name cifar10-cpu-reg \
	  --work-dir benchmarks/checkpoints/runs/cifar10-cpu-reg

train-2x: $(VENV)/.core      ## the shipped CIFAR-10 encoder: the recipe at twice its steps (34,718; 5.3 h on one core, resumable)
	$(BIN)/python benchmarks/train_encoder.py $(RECIPE) --steps 34718 --knn-every 10 --snapshots \
	  --name cifar10-cpu-2x --work-dir benchmarks/checkpoints/runs/cifar10-cpu-2x

train-open-set-rot: $(VENV)/.core ## classes 0-5, the open-set recipe with a rotation-prediction head (resumable)
	$(BIN)/python benchmarks/train_encoder.py $(RECIPE) --classes 0-5 --steps 8680 --knn-every 5 \
	  --snapshots --rotation predict --name cifar10-cpu-c0to5-rot \
	  --work-dir benchmarks/checkpoints/runs/cifar10-cpu-c0to5-rot

train-twin: $(VENV)/.core    ## CIFAR-10 regulariser twin: the recipe for 8 epochs, plain and regularised
	for extra in "--name cifar10-twin-plain" \
	    "--norm-weight 0.005 --entropy-weight 0.01 --name cifar10-twin-reg"; do \
	  $(BIN)/python benchmarks/train_encoder.py $(RECIPE) --epochs 8 --knn-every 4 $$extra \
	    || exit 1; done

train-small: $(VENV)/.core   ## the first CPU encoder (small convnet, 4 epochs; the shipped cifar10-small.pt)
	$(BIN)/python benchmarks/train_encoder.py --threads 1

train-fashion: $(VENV)/.core ## Fashion-MNIST encoders: all classes and classes 0-5, each with rotation negatives and plain; SupCon, supervised, regularised
	for extra in "--rotation negatives --name fashion-mnist-cpu-rotneg" "" \
	    "--classes 0-5 --rotation negatives --name fashion-mnist-cpu-c0to5-rotneg" \
	    "--classes 0-5 --name fashion-mnist-cpu-c0to5" \
	    "--classes 0-5 --objective supcon --name fashion-mnist-cpu-c0to5-supcon" \
	    "--objective supervised --name fashion-mnist-cpu-supervised" \
	    "--norm-weight 0.005 --entropy-weight 0.01 --name fashion-mnist-cpu-regularised"; do \
	  $(BIN)/python benchmarks/train_encoder.py $(RECIPE) --knn-every 1 --dataset fashion-mnist \
	    --epochs 12 --name fashion-mnist-cpu $$extra || exit 1; done

recipe: $(VENV)/.core        ## CPU recipe study: arms of equal views, two at a time
	$(BIN)/python benchmarks/cpu_recipe.py --arms all --jobs 2

train-speed: $(VENV)/.core   ## views/s of both encoders; tensor vs PIL augmentation
	$(BIN)/python benchmarks/train_speed.py

clean:
	rm -rf $(VENV)
