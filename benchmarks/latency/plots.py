"""PNG plots of a sed-bench report (matplotlib, Agg backend: no display needed).

- `latency_stages.png`: one horizontal bar per backend x setting, stacked by stage (medians) plus the
  host overhead.
- `latency_vs_classes.png`: end-to-end median against the classes entering decoder1, one series per
  backend; CER off, real CER and FORCED rows have their own markers.
"""

from __future__ import annotations

import io
from pathlib import Path

from sed_deploy.core.contract import DECODERS, IMAGE_STAGES
from sed_deploy.core.fileio import atomic_write
from sed_deploy.core.optional import require

MARKERS = {"off": "s", "real": "o", "forced": "^"}


def _pyplot():
    matplotlib = require("matplotlib", "the PNG plots of sed-bench")
    matplotlib.use("Agg")
    return require("matplotlib.pyplot")


def _save(fig, path: Path) -> Path:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110)
    with atomic_write(path) as f:
        f.write(buffer.getvalue())
    return path


def _kind(setting: dict) -> str:
    return "off" if not setting["cer"] else ("forced" if setting["forced"] else "real")


def plot_stages(report: dict, path: Path) -> Path:
    plt = _pyplot()
    runs = report["runs"]
    labels = [f"{r['backend']}: {r['setting']['label']}" for r in runs]
    parts = [*IMAGE_STAGES, "host"]
    fig, ax = plt.subplots(figsize=(10, 1.2 + 0.42 * len(runs)))
    left = [0.0] * len(runs)
    for part in parts:
        widths = [r["host_overhead"]["ms"]["median"] if part == "host" else r["stages"][part]["ms"]["median"]
                  for r in runs]
        ax.barh(labels, widths, left=left, label=part)
        left = [a + b for a, b in zip(left, widths, strict=True)]
    ax.invert_yaxis()
    ax.set_xlabel("median latency (ms), batch 1")
    a = report["artifacts"]
    ax.set_title(f"SED-{a['backbone']} {a['image_size']}px, {report['vocabulary']['classes']} classes: per stage")
    ax.legend(loc="lower right", fontsize="small")
    fig.tight_layout()
    _save(fig, path)
    plt.close(fig)
    return path


def plot_vs_classes(report: dict, path: Path) -> Path:
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for backend in dict.fromkeys(r["backend"] for r in report["runs"]):
        runs = sorted((r for r in report["runs"] if r["backend"] == backend), key=lambda r: r["classes"][DECODERS[0]])
        xs = [r["classes"][DECODERS[0]] for r in runs]
        ys = [r["end_to_end"]["ms"]["median"] for r in runs]
        (line,) = ax.plot(xs, ys, "-", alpha=0.4, label=backend)
        labelled = set()
        for r, x, y in zip(runs, xs, ys, strict=True):
            kind = _kind(r["setting"])
            ax.plot([x], [y], MARKERS[kind], color=line.get_color())
            # forced rows share one class count: label the first of them only
            text = f"keep {r['setting']['keep']}" if kind == "forced" else r["setting"]["key"]
            if text not in labelled:
                labelled.add(text)
                ax.annotate(text, (x, y), textcoords="offset points", xytext=(4, 4), fontsize="x-small")
    ax.set_xlabel("classes entering decoder1 (mean over images)")
    ax.set_ylabel("end-to-end median (ms)")
    ax.set_title("End to end against kept classes (s: CER off, o: real CER, ^: FORCED)")
    ax.legend(fontsize="small")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    _save(fig, path)
    plt.close(fig)
    return path


def write_plots(report: dict, folder: str | Path) -> list[Path]:
    """Both plots into `folder` (nothing when the report has no runs)."""
    if not report["runs"]:
        return []
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    return [plot_stages(report, folder / "latency_stages.png"),
            plot_vs_classes(report, folder / "latency_vs_classes.png")]
