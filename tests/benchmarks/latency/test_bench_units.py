"""sed-bench's parts on their own: forced keep ranking, summaries, settings, peak memory, worker restarts."""

import numpy as np
import pytest

from sed_deploy.benchmarks.latency import runner as bench
from sed_deploy.benchmarks.latency.forced_keep import forced_keep, rank_classes
from sed_deploy.benchmarks.latency.measure import PeakRss, summarize_ms
from sed_deploy.benchmarks.latency.runner import BenchOptions, describe_exit, run_one_backend
from sed_deploy.benchmarks.latency.settings import Setting, execution_order, plan_settings
from sed_deploy.benchmarks.latency.worker import BackendTask
from sed_deploy.core.errors import ConfigError
from sed_deploy.core.progress import Steps


def _topk_map():
    """K=3 lists over 4 pixels (columns), 5 classes; index 7 is padding."""
    return np.array([
        [1, 1, 3, 1],   # best: class 1 at three pixels, class 3 at one
        [3, 0, 0, 7],
        [2, 2, 4, 7],
    ], dtype=np.int32).reshape(3, 2, 2)


class TestForcedKeep:
    def test_ranking_votes_then_best_rank_then_index(self):
        # k=2 votes: 1 -> 3, 3 -> 2, 0 -> 2; tie 3/0 broken by best rank (3 is best at a pixel); then 2 and 4
        # (no votes, both best rank 2) by index
        assert rank_classes(_topk_map(), 2, 5).tolist() == [1, 3, 0, 2, 4]

    def test_keeps_exactly_n_sorted(self):
        kept = forced_keep(2)(_topk_map(), 2, 5)
        assert kept.dtype == np.int32
        assert kept.tolist() == [1, 3]

    def test_k_changes_the_votes(self):
        assert forced_keep(3)(_topk_map(), 1, 5).tolist() == [0, 1, 3]

    def test_n_at_least_the_class_count_keeps_all(self):
        assert forced_keep(9)(_topk_map(), 2, 5).tolist() == [0, 1, 2, 3, 4]

    def test_padding_is_never_kept(self):
        kept = forced_keep(4)(_topk_map(), 3, 5)
        assert kept.max() < 5 and len(kept) == 4

    def test_rejects_zero(self):
        with pytest.raises(ConfigError, match="--keep must be at least 1, got 0"):
            forced_keep(0)


class TestSummaries:
    def test_percentiles_ordered_and_in_ms(self):
        s = summarize_ms([0.010, 0.030, 0.020, 0.100, 0.040])
        assert s["min"] == 10.0 and s["max"] == 100.0 and s["median"] == 30.0
        assert s["min"] <= s["median"] <= s["p90"] <= s["p99"] <= s["max"]
        assert s["mean"] == pytest.approx(40.0)

    def test_peak_rss_sees_a_new_allocation(self):
        peak = PeakRss()
        peak.reset()
        before = peak.peak_mb()
        block = np.ones(64 * 2**20 // 8)  # 64 MiB touched
        after = peak.peak_mb()
        del block
        assert after >= before + (60 if peak.scope == "setting" else 0)


class TestSettings:
    def test_display_and_execution_order(self):
        settings = plan_settings([8, 4], keep=32)
        assert [s.key for s in settings] == ["off", "k4", "k8", "k4-keep32", "k8-keep32"]
        assert [s.key for s in execution_order(settings)] == ["k4-keep32", "k8-keep32", "k4", "k8", "off"]
        assert settings[3].label == "CER k=4, FORCED keep 32" and settings[3].forced

    def test_no_cer_is_the_baseline_only(self):
        assert [s.key for s in plan_settings([4, 8], cer=False)] == ["off"]

    def test_round_trip(self):
        s = Setting(cer=True, topk=8, keep=32)
        assert Setting.from_dict(s.to_dict()) == s

    def test_bad_values(self):
        with pytest.raises(ConfigError, match="between 1 and 16"):
            plan_settings([4, 17])
        with pytest.raises(ConfigError, match="nothing to run"):
            plan_settings([], baseline=False)


class TestWorkerRestart:
    def test_a_killed_worker_fails_its_setting_and_the_rest_still_run(self, monkeypatch, tmp_path):
        settings = execution_order(plan_settings([4], keep=2))  # k4-keep2, k4, off
        calls = []

        def fake_drive(task, on_message, isolate):
            keys = [s["key"] for s in task.settings]
            calls.append((keys, task.measure_text))
            on_message("loaded", {"backend": "ort", "load_seconds": 0.1, "matmul_peak": None})
            for data in task.settings:
                on_message("begin", data)
                if data["key"] == "k4" and len(calls) == 1:
                    on_message("progress", 1)
                    return describe_exit(-9)
                on_message("setting", {"setting": data, "iterations": 1})
            return None

        monkeypatch.setattr(bench, "drive_worker", fake_drive)
        task = BackendTask(artifacts=str(tmp_path), backend="ort", names=("a",),
                           settings=tuple(s.to_dict() for s in settings))
        run = run_one_backend("ort", task, settings, BenchOptions(artifacts=tmp_path, warmup=1, iters=2),
                              Steps(9, enabled=False))
        assert [r["setting"]["key"] for r in run.results] == ["k4-keep2", "off"]
        assert [f["setting"]["key"] for f in run.failures] == ["k4"]
        assert "SIGKILL, probably by the out-of-memory killer during this setting" in run.failures[0]["reason"]
        assert calls == [(["k4-keep2", "k4", "off"], True), (["off"], False)]
        assert run.info["status"] == "ok"

    def test_a_worker_that_dies_before_loading_fails_the_backend(self, monkeypatch, tmp_path):
        monkeypatch.setattr(bench, "drive_worker", lambda task, on_message, isolate: describe_exit(1))
        settings = plan_settings([4])
        task = BackendTask(artifacts=str(tmp_path), backend="ort", names=("a",),
                           settings=tuple(s.to_dict() for s in settings))
        run = run_one_backend("ort", task, settings, BenchOptions(artifacts=tmp_path), Steps(1, enabled=False))
        reason = "the worker process exited with code 1 before the first setting"
        assert run.info == {"status": "failed", "reason": reason}
        assert run.results == []
