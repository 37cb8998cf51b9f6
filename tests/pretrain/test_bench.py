"""The speed script's step timer runs every variant on one batch.

Variants: ours, the straightforward fp32 per-crop step, the trunk-only floor."""

from pretrain.config import load_config
from swavbench.checks.pretrain_bench import FLOOR, OURS, PLAIN, time_steps


def test_time_steps_times_every_variant(generated_data):
    cfg = load_config("tiny", [f"data.path={generated_data}", "optim.batch_size=8"])
    times = time_steps(cfg, steps=2, warmup=0)
    assert set(times) == {OURS, PLAIN, FLOOR}
    assert all(len(v) == 2 and all(t > 0 for t in v) for v in times.values())
