import pytest

from swavbench.core.distributed import DistInfo, env_dist_info

CLEAR = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "SLURM_PROCID", "SLURM_NTASKS", "SLURM_LOCALID")


@pytest.fixture
def clean_env(monkeypatch):
    for k in CLEAR:
        monkeypatch.delenv(k, raising=False)
    return monkeypatch


def test_single_process_by_default(clean_env):
    assert env_dist_info() == DistInfo(0, 0, 1)


def test_torchrun_variables(clean_env):
    clean_env.setenv("RANK", "5")
    clean_env.setenv("WORLD_SIZE", "8")
    clean_env.setenv("LOCAL_RANK", "1")
    assert env_dist_info() == DistInfo(5, 1, 8)


def test_slurm_variables_any_tasks_per_node(clean_env):
    # task 11 of 2 nodes x 8 tasks: second node, local id 3
    clean_env.setenv("SLURM_PROCID", "11")
    clean_env.setenv("SLURM_NTASKS", "16")
    clean_env.setenv("SLURM_LOCALID", "3")
    info = env_dist_info()
    assert info == DistInfo(11, 3, 16) and not info.is_main
    clean_env.setenv("SLURM_NTASKS", "1")  # a one-task job step is a single process
    assert env_dist_info() == DistInfo(0, 0, 1)
