"""Self-checks and benchmarks, on the top floor beside the command line: gpu-check, the suite rehearsal
(and its generated data), the chaos benchmark, the pretraining / evaluation loader and scaling benches and
NVIDIA DALI's augmentation as the loader's anchor. They use every stage; no stage uses them."""
