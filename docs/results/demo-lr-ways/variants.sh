#!/bin/bash
# The demo under each search-side way against the learning-rate confound (one seed each; the demo's grid).
cd "${DEMO_CLONE:-.}"  # a clone of 181ff23 (population 8, the four-rate grid 0.03-1.0), venv installed
export GLO_DATA_DIR="${GLO_DATA_DIR:-$(realpath ../shared/data)}"
GRID='run.name=demo'
run() {  # name, extra --set args
  local name=$1; shift
  local start=$(date +%s)
  .venv/bin/glo experiment configs/demo.toml --db out/v-$name.db --out out/v-$name --set "$GRID" "$@" > out/v-$name.log 2>&1
  echo "$name rc=$? wall=$(( $(date +%s) - start ))s" >> /tmp/variants.log
}
mkdir -p out
run tuned-none
run task-none --set experiment.search_learning_rate=task
run tuned-cal --set task.loss_scale=calibrated
run task-cal --set experiment.search_learning_rate=task --set task.loss_scale=calibrated
echo all-done >> /tmp/variants.log
