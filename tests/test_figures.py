"""The report's figures as a reader sees them: mathematical labels, every legend entry, no legend over the data,
single- and double-column widths, PNG and PDF."""

import numpy as np
import pytest

from benchmarks.figures import (DOUBLE_COLUMN, SINGLE_COLUMN, draw_accuracy_vs_k, draw_approximation_vs_T,
                                draw_bias_variance, draw_bound_vs_gap, draw_spectrum, method_styles, plt_and_sns,
                                save_figure)

ROWS = [dict(hidden=m, k=k, method=meth, seed=s, test_accuracy=0.5 + 0.01 * k / m + 0.01 * s + 0.02 * i)
        for m in (64, 128) for k in (16, 32) for s in range(3)
        for i, meth in enumerate(["spectral", "magnitude + recon.", "random", "dense from scratch"])]
ROWS += [dict(hidden=m, k=m, method="full network", seed=s, test_accuracy=0.9) for m in (64, 128) for s in range(3)]


def _figures(wide):
    yield "spectrum", draw_spectrum([3.0, 1.0, 0.1, 0.0], [1e-4, 1e-2, 1.0], [2.9, 2.5, 1.0], [1, 2, 3],
                                    [1.1, 0.1, 0.01], [1.1, 0.1, 0.0], wide=wide)
    yield "accuracy", draw_accuracy_vs_k(ROWS, wide=wide)
    yield "bound_vs_gap", draw_bound_vs_gap([dict(m=8, n=500, k=k, gap=0.1 * k, bound_gap=0.5 * k) for k in (2, 4)],
                                            0.5, wide=wide)
    yield "approximation", draw_approximation_vs_T([dict(T=4, measured=1e-3, bound=1e-2),
                                                    dict(T=8, measured=2e-3, bound=float("inf"))], wide=wide)
    yield "bias_variance", draw_bias_variance([dict(rel_lam=r, bias=0.1 * r, estimation=1 / (1 + r), bound=0.8,
                                                    test_risk=0.2) for r in (0.01, 0.1, 1.0)], wide=wide)


def _overlaps(a, b) -> bool:
    return a.x0 < b.x1 and b.x0 < a.x1 and a.y0 < b.y1 and b.y0 < a.y1


@pytest.mark.parametrize("wide", [False, True])
def test_labels_legends_and_layout(wide):
    plt, _ = plt_and_sns()
    expected_labels = {
        "spectrum": [("$j$", "$\\mu_j$"), ("$\\lambda", "$N(\\lambda)$"), ("$k$", "$L_A(J_k)$")],
        "bound_vs_gap": [("(f^\\#)", "\\hat\\Psi(f)$")],
        "approximation": [("$T$", "squared deviation")],
        "bias_variance": [("$\\lambda", "risk")],
    }
    for name, fig in _figures(wide):
        fig.canvas.draw()
        renderer = fig.canvas.get_renderer()
        assert fig.get_size_inches()[0] == pytest.approx(DOUBLE_COLUMN if wide else SINGLE_COLUMN)
        for ax in fig.axes:
            assert ax.get_xlabel() and ax.get_ylabel(), f"{name}: an axis without a label"
        for (x_part, y_part), ax in zip(expected_labels.get(name, []), fig.axes):
            assert x_part in ax.get_xlabel() and y_part in ax.get_ylabel(), (name, ax.get_xlabel(), ax.get_ylabel())
        legends = fig.legends + [ax.get_legend() for ax in fig.axes if ax.get_legend() is not None]
        assert len(legends) == 1, f"{name}: expected one legend"
        box = legends[0].get_window_extent(renderer)
        for ax in fig.axes:
            assert not _overlaps(box, ax.get_window_extent(renderer)), f"{name}: the legend covers the axes"
        if name == "accuracy":
            entries = [t.get_text() for t in legends[0].get_texts()]
            assert entries == ["spectral", "magnitude + recon.", "random", "dense from scratch",
                               "full network (median)"]
            assert len(fig.axes) == 2 and [ax.get_title() for ax in fig.axes] == ["$m = 64$", "$m = 128$"]
        plt.close(fig)


def test_single_column_panels_stack_and_double_column_panels_sit_side_by_side():
    plt, _ = plt_and_sns()
    for wide in (False, True):
        fig = draw_accuracy_vs_k(ROWS, wide=wide)
        fig.canvas.draw()
        (a, b) = [ax.get_position() for ax in fig.axes]
        assert (a.y0 > b.y1) != wide and (b.x0 > a.x1) == wide
        plt.close(fig)


def test_methods_keep_distinct_colours_and_markers():
    from benchmarks.figures import MARKERS, METHOD_ORDER

    methods = list(METHOD_ORDER) + ["a user's criterion", "another one"]
    styles = method_styles(methods)
    keys = {(tuple(np.round(s["color"], 6)), s["marker"], s["linestyle"]) for s in styles.values()}
    assert len(keys) == len(methods)  # every method of a report is told apart
    first = methods[:len(MARKERS)]
    assert len({styles[m]["marker"] for m in first}) == len(first)  # markers alone tell the first twelve apart
    # the same method gets the same style whatever else is drawn beside it
    assert method_styles(["random", "spectral"])["spectral"] == styles["spectral"]


def test_save_figure_writes_png_and_pdf(tmp_path):
    plt, _ = plt_and_sns()
    fig = draw_accuracy_vs_k(ROWS)
    paths = save_figure(fig, tmp_path / "acc")
    plt.close(fig)
    assert [p.name for p in paths] == ["acc.png", "acc.pdf"]
    assert paths[0].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and paths[1].read_bytes()[:5] == b"%PDF-"
