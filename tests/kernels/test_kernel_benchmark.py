"""The kernel benchmark script: its byte count and its one-line exit where CUDA is missing."""

from __future__ import annotations

import torch

from sed_deploy.benchmarks.studies import kernel_linear_attention as bench


def test_bytes_moved_for_decoder1_at_459_classes():
    assert bench.bytes_moved(576, 128, 459, 4) == 541_458_432
    assert bench.bytes_moved(576, 128, 459, 2) == 270_729_216


def test_exits_with_one_line_without_cuda(monkeypatch, capsys):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)

    assert bench.main([]) == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.count("\n") == 1 and "needs a CUDA GPU" in captured.err
