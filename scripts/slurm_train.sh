#!/bin/bash
# Example SLURM job: `datacomp train` on 2 nodes x 8 GPUs (one task per GPU), e.g. the medium scale.
# Submit with:  sbatch scripts/slurm_train.sh /path/to/shards /path/to/output medium_myfilter
# The global batch (4096 at medium) must divide by nodes x GPUs x --accum-freq; the step count and
# global batch do not depend on the layout, so any layout that divides gives the same recipe.
#SBATCH --job-name=datacomp-train
#SBATCH --nodes=2
#SBATCH --ntasks-per-node=8
#SBATCH --gpus-per-node=8
#SBATCH --cpus-per-task=6
#SBATCH --time=48:00:00
#SBATCH --output=%x_%j.out
#SBATCH --requeue
set -euo pipefail

DATA_DIR=${1:?usage: sbatch slurm_train.sh DATA_DIR OUTPUT_DIR EXP_NAME [SCALE]}
OUTPUT_DIR=${2:?output dir}
EXP_NAME=${3:?experiment name}
SCALE=${4:-medium}

# Rendezvous for torch.distributed (env://): the first node of the allocation.
MASTER_ADDR=$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)
export MASTER_ADDR
export MASTER_PORT=${MASTER_PORT:-29500}
export OMP_NUM_THREADS=${SLURM_CPUS_PER_TASK:-1}

# Each task reads RANK/WORLD_SIZE/LOCAL_RANK from SLURM_PROCID/SLURM_NTASKS/SLURM_LOCALID.
# A requeued or re-submitted job resumes from $OUTPUT_DIR/$EXP_NAME/checkpoints/epoch_latest.pt.
srun --cpu-bind=v --accel-bind=gn python -m datacomp.train \
    --scale "$SCALE" \
    --data-dir "$DATA_DIR" \
    --output-dir "$OUTPUT_DIR" \
    --exp-name "$EXP_NAME" \
    --workers "${SLURM_CPUS_PER_TASK:-4}" \
    --precision amp \
    --checkpoint-minutes 20 \
    --no-progress
