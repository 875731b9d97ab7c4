#!/usr/bin/env bash
# Repeat the synthetic experiment: COUNT runs of the six generators on each data set.
#
#   synthetic/run_datasets.sh COUNT [flags for synthetic/main.py ...]
#   synthetic/run_datasets.sh 10 --max_step 5000 --log_step 250 --model_dir /tmp/synth_runs
#
# Every run has its own random seed (saved in its params.json), so do not pass --seed.
# Environment:
#   DATA_TYPES   data sets to run, in order (default: "linear collider complete network")
#   PER_PROCESS  runs trained side by side in one process (default: COUNT). One process
#                pays TensorFlow's start-up and compilation once and updates all its runs
#                in one compiled call; on a CPU ten runs together cost far less than ten
#                processes.
#   PYTHON       interpreter (default: the project's .venv/bin/python, else python3)
# Then: python synthetic/collect_stats.py <model_dir> --out <folder>
set -euo pipefail

usage="usage: synthetic/run_datasets.sh COUNT [flags for synthetic/main.py ...]"
count=${1:-}
if [[ ! $count =~ ^[1-9][0-9]*$ ]]; then
    echo "run_datasets.sh: error: COUNT must be a positive integer, got '${count}'. $usage" >&2
    exit 2
fi
shift
for word in "$@"; do
    case $word in
        --seed|--seed=*|--num_runs|--num_runs=*|--data_type|--data_type=*|--load_path|--load_path=*)
            echo "run_datasets.sh: error: $word is chosen by the script (use DATA_TYPES or PER_PROCESS). $usage" >&2
            exit 2 ;;
    esac
done
per_process=${PER_PROCESS:-$count}
if [[ ! $per_process =~ ^[1-9][0-9]*$ ]]; then
    echo "run_datasets.sh: error: PER_PROCESS must be a positive integer, got '${per_process}'" >&2
    exit 2
fi

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
python=${PYTHON:-}
if [[ -z $python ]]; then
    if [[ -x $here/../.venv/bin/python ]]; then python=$here/../.venv/bin/python; else python=python3; fi
fi

for data_type in ${DATA_TYPES:-linear collider complete network}; do
    left=$count
    while (( left > 0 )); do
        runs=$(( left < per_process ? left : per_process ))
        echo "run_datasets.sh: $data_type, $runs run(s) ($(( count - left + runs )) of $count) at $(date +%H:%M:%S)"
        "$python" "$here/main.py" --data_type "$data_type" --num_runs "$runs" "$@"
        left=$(( left - runs ))
    done
done
echo "run_datasets.sh: finished at $(date +%H:%M:%S)"
