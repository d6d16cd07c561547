"""``cnnzoo.viz.panels``: the notebooks' figures (image grids, boxes, bars per class or model)
draw what they are given, where they are told to, and refuse what they cannot draw."""

from __future__ import annotations

import math

import matplotlib.pyplot as plt
import numpy as np
import pytest
import torch

from cnnzoo.viz.panels import (
    BACKGROUND,
    add_boxes,
    class_bars,
    class_colours,
    class_legend,
    cost_bars,
    image_grid,
)


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


def test_class_colours_are_background_then_tab10_and_all_distinct():
    colours = class_colours(11)
    assert colours.shape == (11, 3)
    assert tuple(colours[0]) == BACKGROUND
    assert np.allclose(colours[1], plt.get_cmap("tab10")(0)[:3])
    assert np.allclose(colours[10], plt.get_cmap("tab10")(9)[:3])
    assert len({tuple(c) for c in colours.round(4)}) == 11
    assert len({tuple(c) for c in class_colours(21).round(4)}) == 21  # tab20 beyond 11


@pytest.mark.parametrize("n", [0, 22])
def test_class_colours_refuses_counts_it_cannot_tell_apart(n):
    with pytest.raises(ValueError, match="1 to 21"):
        class_colours(n)


def test_class_legend_names_the_chosen_classes_in_their_colours():
    colours = class_colours(4)
    handles = class_legend(["bg", "a", "b", "c"], colours, [3, 1])
    assert [h.get_label() for h in handles] == ["c", "a"]
    assert np.allclose(handles[0].get_facecolor()[:3], colours[3])
    assert len(class_legend(["bg", "a"], class_colours(2))) == 2
    with pytest.raises(IndexError):
        class_legend(["bg", "a"], class_colours(2), [2])


def test_image_grid_draws_rgb_as_it_is_and_maps_with_the_colour_scale():
    image = torch.randint(0, 256, (3, 5, 7), dtype=torch.uint8)
    heat = torch.arange(35.0).reshape(5, 7)
    fig = image_grid(
        [[("rgb", image), ("map", heat)], [("only", image)]], cmap="magma", vmin=-1.0, vmax=50.0
    )
    axes = fig.axes
    assert len(axes) == 4  # 2 x 2, the last panel left empty
    assert [ax.get_title() for ax in axes] == ["rgb", "map", "only", ""]
    assert np.array_equal(axes[0].images[0].get_array(), image.permute(1, 2, 0).numpy())
    shown = axes[1].images[0]
    assert np.array_equal(shown.get_array(), heat.numpy())
    assert shown.get_cmap().name == "magma" and shown.get_clim() == (-1.0, 50.0)
    assert not axes[3].images and not axes[3].axison


def test_image_grid_titles_the_first_row_only_and_adds_legend_and_colour_bar():
    heat = np.ones((4, 4))
    legend = class_legend(["bg", "item"], class_colours(2))
    fig = image_grid(
        [[("a", heat), ("b", heat)], [("c", heat), ("d", heat)]],
        first_row_titles=True,
        legend=legend,
        colorbar=True,
    )
    assert [ax.get_title() for ax in fig.axes[:4]] == ["a", "b", "", ""]
    assert len(fig.axes) == 5  # the colour bar
    assert [t.get_text() for t in fig.legends[0].get_texts()] == ["bg", "item"]


def test_image_grid_refuses_no_panels_and_pictures_it_cannot_draw():
    with pytest.raises(ValueError, match="at least one panel"):
        image_grid([])
    with pytest.raises(ValueError, match="picture"):
        image_grid([[("4-D", torch.zeros(1, 3, 4, 4))]])


def test_add_boxes_draws_xyxy_rectangles_in_the_given_colours():
    _, ax = plt.subplots()
    patches = add_boxes(
        ax,
        torch.tensor([[1.0, 2.0, 11.0, 7.0], [0.0, 0.0, 4.0, 4.0]]),
        ["red", "blue"],
        lw=2.5,
        ls="--",
    )
    assert len(patches) == 2 and all(p in ax.patches for p in patches)
    first = patches[0]
    assert first.get_xy() == (1.0, 2.0)
    assert (first.get_width(), first.get_height()) == (10.0, 5.0)
    assert first.get_edgecolor()[:3] == (1.0, 0.0, 0.0) and not first.get_fill()
    assert first.get_linewidth() == 2.5 and first.get_linestyle() == "--"
    one = add_boxes(ax, [0, 0, 2, 3], (0.0, 0.5, 1.0), fill=True)  # one box, one RGB colour
    assert len(one) == 1 and one[0].get_fill() and one[0].get_height() == 3.0


def test_add_boxes_refuses_wrong_shapes_and_colour_counts():
    _, ax = plt.subplots()
    with pytest.raises(ValueError, match=r"\(K, 4\)"):
        add_boxes(ax, torch.zeros(2, 3))
    with pytest.raises(ValueError, match="3 colours for 2 boxes"):
        add_boxes(ax, torch.zeros(2, 4), ["r", "g", "b"])


def test_cost_bars_draws_each_metric_on_a_log_scale_in_row_order():
    table = {"big": {"params": 1e6, "ms": 8.0}, "small": {"params": 1e3, "ms": 0.5}}
    fig = cost_bars(table, {"params": "parameters", "ms": "ms per image"}, ["r", "b"], "t")
    left, right = fig.axes
    assert [b.get_width() for b in left.patches] == [1e6, 1e3]
    assert [b.get_width() for b in right.patches] == [8.0, 0.5]
    assert left.get_xscale() == "log" and right.get_xlabel() == "ms per image (log scale)"
    assert [t.get_text() for t in left.get_yticklabels()] == ["big", "small"]
    assert left.yaxis_inverted()  # the first row on top
    assert left.patches[0].get_facecolor()[:3] == (1.0, 0.0, 0.0)


@pytest.mark.parametrize(
    ("table", "metrics", "message"),
    [
        ({}, {"ms": "ms"}, "at least one row"),
        ({"a": {"ms": 1.0}}, {}, "at least one row"),
        ({"a": {"ms": 0.0}}, {"ms": "ms"}, "positive"),
        ({"a": {"ms": 1.0}}, {"params": "p"}, "positive"),
    ],
)
def test_cost_bars_refuses_what_a_log_scale_cannot_show(table, metrics, message):
    with pytest.raises(ValueError, match=message):
        cost_bars(table, metrics)


def test_cost_bars_refuses_a_wrong_number_of_colours():
    with pytest.raises(ValueError, match="1 colours for 2 rows"):
        cost_bars({"a": {"ms": 1.0}, "b": {"ms": 2.0}}, {"ms": "ms"}, ["r"])


def test_class_bars_groups_series_leaves_nan_empty_and_draws_the_mean():
    names = ["bg", "a", "b"]
    fig = class_bars(
        {"one": {"x": [0.9, math.nan, 0.3], "y": torch.tensor([0.5, 0.25, 1.0])}},
        names,
        xlabel="AP",
        mean=True,
    )
    (ax,) = fig.axes
    widths = [b.get_width() for b in ax.patches]
    assert widths == pytest.approx([0.9, 0.0, 0.3, 0.5, 0.25, 1.0])
    heights = {round(b.get_height(), 6) for b in ax.patches}
    assert heights == {0.4}  # two series share each class's 0.8
    means = [line.get_xdata()[0] for line in ax.get_lines()]
    assert means == pytest.approx([0.6, 1.75 / 3])  # NaN left out of x's mean
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert "mean AP 0.600" in labels and "mean AP 0.583" in labels
    assert [t.get_text() for t in ax.get_yticklabels()] == names
    assert ax.get_xlim() == (0.0, 1.0) and ax.get_title() == "one"


def test_class_bars_refuses_empty_panels_and_series_of_another_length():
    with pytest.raises(ValueError, match="at least one panel"):
        class_bars({}, ["a"])
    with pytest.raises(ValueError, match="at least one panel"):
        class_bars({"p": {}}, ["a"])
    with pytest.raises(ValueError, match="2 scores for 3 classes"):
        class_bars({"p": {"s": [0.1, 0.2]}}, ["a", "b", "c"])
