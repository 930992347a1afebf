"""The order the suite's two pytest-xdist workers take the tests in: longest first, shared greedily.

pytest-xdist's ``worksteal`` hands each worker a contiguous share of the collected order (the first
worker the first half) and, when one runs dry, steals from the *end* of the other's queue. In file
order, the heavy fits bunched up in some files and one worker finished 22 s before the other. Here
each worker's share starts with its long tests and ends with the short ones that stealing moves:
the longest-processing-time-first rule, on the walls of a fresh-clone CI (2 workers, AMD EPYC).
Two groups stay on one worker each: the tests that read the trained checkpoint (the first of them
trains it, under a lock, and a reader on the other worker would wait idle for it) with those that
share the stop tests' reference run (trained once per worker: on two workers it trains twice), and the DDP
fits (two processes each, which would otherwise overlap and run four processes on two cores).
Tests not listed count as 1 s. The order changes only the wall time, never a result.
"""

from __future__ import annotations

import pytest

# Wall seconds in a fresh-clone CI (pytest --durations, call plus setup), tests/ omitted; refresh when a
# test's cost moves or a test is renamed (an unlisted test counts 1 s and is scheduled last). The top
# 25 refreshed from the CI of 117da2a (AVX2 AMD EPYC), the rest from earlier ones.
WALL_S = {
    "test_study.py::test_tiny_study_runs_reports_and_resumes": 124,
    "test_ddp.py::test_sigterm_to_every_ddp_rank_stops_all_and_resumes": 72,
    "test_ddp.py::test_ddp_fit_on_two_cpu_processes": 52,
    "test_reliability.py::test_checkpoint_from_another_network_is_refused": 41,  # trains the checkpoint
    "test_reliability.py::test_stopped_fit_resumes_exactly[ctrl-c]": 40,  # trains the reference run
    "test_cli_fit.py::test_smoke_fit[ddsnet]": 14,
    "test_tune.py::test_tiny_tune_on_digits_then_the_study_uses_each_arms_pick": 38,
    "test_fuzz.py::test_cli_fuzz_one_line_errors": 28,
    "test_reliability.py::test_stopped_fit_resumes_exactly[sigkill]": 28,
    "test_scale.py::test_sigterm_to_the_runner_stops_its_fits_and_starts_no_other": 28,
    "test_study.py::test_an_ablation_of_a_timm_knob_runs_from_yaml_alone": 27,
    "test_packaging.py::test_a_core_install_fits_and_report_names_its_extra": 15,
    "test_gpu_paths.py::test_nan_on_one_ddp_rank_stops_both_with_one_error_and_keeps_the_checkpoint": 15,
    "test_scale.py::test_gpu_study_smoke_runs_the_prepared_path_on_the_cpu": 23,
    "test_cli_fit.py::test_smoke_fit[ddsnet_plainconv_nodilation]": 24,
    "test_recipe.py::test_ema_weights_are_validated_checkpointed_and_tested_and_the_test_curve_matches": 18,
    "test_cli_fit.py::test_smoke_fit[googlenet]": 19,
    "test_recipe.py::test_bf16_mixed_training_step_on_the_cpu": 22,
    "test_scale.py::test_slurm_launcher_through_submitit_local_executor": 13,
    "test_warm_fits.py::test_a_warm_command_ends_as_the_cold_one": 8,
    "test_cli_fit.py::test_overfit_batches_trains_on_the_same_whole_batches_every_epoch": 6,
    "test_scale.py::test_sweep_agent_runs_land_where_the_study_looks_and_a_retry_resumes": 16,
    "test_deploy.py::test_export_onnx_torchscript_int8": 13,
    "test_tune.py::test_report_and_wandb_spec_carry_the_tuning_section": 12,
    "test_cli_fit.py::test_second_run_in_same_save_dir_does_not_collide": 10,
    "test_tune.py::test_two_tuners_share_one_storage_and_never_run_a_trial_twice": 9,
    "test_cli_fit.py::test_smoke_fit[mobilenetv3_small_050]": 8,
    "test_tune.py::test_a_killed_tuner_resumes_with_the_interrupted_trial_failed_and_retried": 8,
    "test_reliability.py::test_corrupt_image_in_image_folder_is_skipped_with_warning": 8,
    "test_reliability.py::test_nan_loss_after_an_epoch_keeps_that_epochs_checkpoints": 8,
    "test_scale.py::test_a_second_runner_skips_runs_the_first_holds": 8,
    "test_deploy.py::test_export_of_a_run_recorded_relative_from_another_directory": 8,
    "test_tune.py::test_unknown_space_key_and_unwritable_storage_are_one_line": 7,
    "test_gpu_paths.py::test_ctrl_c_in_a_fit_exits_130_naming_the_checkpoint_it_wrote": 7,
    "test_reliability.py::test_fit_with_key_but_unreachable_server_goes_offline": 7,
    "test_reliability.py::test_no_disk_space_keeps_earlier_checkpoints": 7,
    "test_reliability.py::test_nan_loss_stops_with_a_message": 6,
    "test_host_allocator.py::test_tuned_allocator_stops_refaulting_large_tensors": 6,
    "test_configs.py::test_study_configs_load[cifar10_compression]": 6,
    "test_layout.py::test_study_dry_run_report_and_errors_do_not_load_torch": 6,
    "test_device.py::test_compile_is_a_config_key_that_keeps_checkpoint_names": 6,
    "test_tune.py::test_a_validation_only_fit_refuses_the_test_split": 5,
}


def _wall(item: pytest.Item) -> float:
    return WALL_S.get(item.nodeid.removeprefix("tests/"), 1.0)


def _group(item: pytest.Item) -> int | None:
    """The worker share an item must stay in (see the module's docstring), or None."""
    fixtures = getattr(item, "fixturenames", ())
    if "trained_checkpoint" in fixtures or "reference_run" in fixtures:  # trained once per worker: share it
        return 0
    if item.nodeid.startswith("tests/test_ddp.py::") or "ddp_rank" in item.nodeid:
        return 1
    return None


def share_out(items: list[pytest.Item], workers: int) -> list[pytest.Item]:
    """``items`` reordered so that worksteal's contiguous shares are the greedy longest-first split."""
    shares: list[list[pytest.Item]] = [[] for _ in range(workers)]
    loads = [0.0] * workers
    for item in sorted(items, key=_wall, reverse=True):  # stable: equal walls keep the file order
        group = _group(item)
        worker = group % workers if group is not None else min(range(workers), key=loads.__getitem__)
        shares[worker].append(item)
        loads[worker] += _wall(item)
    # worksteal gives worker k exactly len(pending) // (workers - k) of what is left: move the last
    # (shortest) ungrouped tests so that each share has that count.
    sizes, left = [], len(items)
    for k in range(workers):
        sizes.append(left // (workers - k))
        left -= sizes[-1]
    for k in range(workers):
        while len(shares[k]) > sizes[k]:
            ungrouped = [i for i, item in enumerate(shares[k]) if _group(item) is None]
            spare = ungrouped[-1] if ungrouped else -1  # a group only saves time: split it if it must
            receiver = next(j for j in range(workers) if len(shares[j]) < sizes[j])
            shares[receiver].append(shares[k].pop(spare))
    for share in shares:
        share.sort(key=_wall, reverse=True)
    return [item for share in shares for item in share]


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    # In pytest-xdist's workers only (they collect; their --dist reads "no"): any schedule takes the
    # tests in this order, and worksteal's shares are the ones planned here.
    workerinput = getattr(config, "workerinput", None)
    if workerinput:
        items[:] = share_out(items, int(workerinput["workercount"]))
