#!/bin/bash
# Example SLURM job: `datacomp evaluate` of trained models, one GPU each, as a job array.
# Submit with:  sbatch --array=0-2 scripts/slurm_evaluate.sh EXPERIMENTS.txt EVAL_DATA_DIR [extra evaluate flags]
# EXPERIMENTS.txt lists one training output folder (the --output-dir/--exp-name of `datacomp train`) per
# line; array task i evaluates line i. EVAL_DATA_DIR holds the sets from `datacomp download-evalsets`
# (or the embedded world's eval/ folder). Results land in each folder's eval_results.jsonl; a requeued
# task skips the evaluation tasks whose result line exists, so it resumes.
# DRY_RUN=1 prints the command instead of running it; SRUN= (empty) runs it without srun.
#SBATCH --job-name=datacomp-evaluate
#SBATCH --nodes=1
#SBATCH --ntasks=1
#SBATCH --gpus-per-task=1
#SBATCH --cpus-per-task=8
#SBATCH --time=08:00:00
#SBATCH --output=%x_%A_%a.out
#SBATCH --requeue
set -euo pipefail

EXPERIMENTS=${1:?usage: sbatch --array=0-N slurm_evaluate.sh EXPERIMENTS.txt EVAL_DATA_DIR [evaluate flags]}
EVAL_DATA_DIR=${2:?evaluation data dir}
shift 2

INDEX=${SLURM_ARRAY_TASK_ID:-0}
TRAIN_OUTPUT_DIR=$(grep -v '^[[:space:]]*\(#\|$\)' "$EXPERIMENTS" | sed -n "$((INDEX + 1))p")
if [ -z "$TRAIN_OUTPUT_DIR" ]; then
    echo "slurm_evaluate.sh: no line $((INDEX + 1)) in $EXPERIMENTS (array index $INDEX)" >&2
    exit 2
fi
export OMP_NUM_THREADS=${SLURM_CPUS_PER_TASK:-1}

CMD=(python -m datacomp evaluate
     --train-output-dir "$TRAIN_OUTPUT_DIR"
     --data-dir "$EVAL_DATA_DIR"
     --workers "${SLURM_CPUS_PER_TASK:-4}"
     --no-progress
     "$@")
SRUN=${SRUN-srun}
if [ "${DRY_RUN:-0}" = 1 ]; then
    echo ${SRUN:+$SRUN} "${CMD[@]}"
else
    ${SRUN:+$SRUN} "${CMD[@]}"
fi
