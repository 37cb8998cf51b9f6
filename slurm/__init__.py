"""SLURM orchestration through submitit: eval suites, pretrain->eval pipelines, sweeps."""
