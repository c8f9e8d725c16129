"""Diagrams generated from the flow: every node named, outcomes coloured, valid SVG and PNG."""

from __future__ import annotations

import dataclasses
import io
import re
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import pytest
from PIL import Image, ImageFont

from flows import LEVELS, Flow, load_flow
from flows.graph import (
    LEVEL_COLOURS,
    Graph,
    Waypoint,
    _Printer,
    build_graph,
    to_mermaid,
    to_png,
    to_svg,
)
from tests.factories import intake_flow
from tests.flows.test_checker import variant

SVG = "{http://www.w3.org/2000/svg}"
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
DEJAVU = Path("/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf")


def svg_texts(svg: str) -> list[str]:
    root = ET.fromstring(svg.encode("utf-8"))
    assert root.tag == f"{SVG}svg"
    return ["".join(el.itertext()) for el in root.iter(f"{SVG}text")]


# --- the graph model ----------------------------------------------------------


def test_the_graph_has_every_node_once_in_rows_and_edges_point_down() -> None:
    flow = intake_flow()
    graph = build_graph(flow)
    assert [n.id for n in graph.nodes] == list(flow.nodes)
    placed = [s for row in graph.rows for s in row if isinstance(s, str)]
    assert sorted(placed) == sorted(flow.nodes)
    layer = {n.id: n.layer for n in graph.nodes}
    assert all(layer[e.target] > layer[e.source] for e in graph.edges)
    for row_index, row in enumerate(graph.rows):
        assert all(layer[s] == row_index for s in row if isinstance(s, str))
    # an edge that skips rows passes through one waypoint in each row between
    for i, e in enumerate(graph.edges):
        passes = [
            s.layer for row in graph.rows for s in row if isinstance(s, Waypoint) and s.edge == i
        ]
        assert sorted(passes) == list(range(layer[e.source] + 1, layer[e.target]))
    assert layer[flow.start] == 0


def test_the_graph_is_frozen() -> None:
    graph = build_graph(intake_flow())
    with pytest.raises(dataclasses.FrozenInstanceError):
        graph.title = "changed"  # type: ignore[misc]


def test_edges_are_labelled_with_answers_conditions_and_outcomes() -> None:
    edges = {(e.source, e.target): e for e in build_graph(intake_flow()).edges}
    assert edges[("welcome", "after_massage")].label == "My back hurts after a massage"
    assert edges[("conditions", "scoliosis_degree")].label == "condition is scoliosis"
    assert edges[("conditions", "acute")].label == "otherwise"
    assert edges[("oils", "oil_allergy")].label == "Yes, please / Not sure yet"
    assert edges[("fracture", "triage")].label == ""
    interrupt = edges[("emergency", "emergency_stop")]
    assert interrupt.kind == "interrupt" and interrupt.level == "EMERGENCY"
    triage = [e for e in build_graph(intake_flow()).edges if e.source == "triage"]
    assert {(e.target, e.level) for e in triage} == {
        ("oils", "OK"),
        ("oils", "CLEAR"),
        ("offer_call", "LATER"),
        ("offer_call", "STOP"),
    }


# --- Mermaid ------------------------------------------------------------------


def test_mermaid_names_every_node_and_colours_every_outcome() -> None:
    flow = intake_flow()
    text = to_mermaid(flow)
    assert "\nflowchart TD\n" in text
    for node_id in flow.nodes:
        assert re.search(rf"^    {node_id}[(\[{{].*<b>{node_id}</b>", text, re.M), node_id
    for level in LEVELS:
        assert f"classDef outcome_{level} fill:{LEVEL_COLOURS[level]}" in text
        assert f":::outcome_{level}" in text
    assert "emergency_stop([" in text and ":::outcome_EMERGENCY" in text
    assert "    emergency -.->" in text
    assert '    conditions -->|"condition is scoliosis"| scoliosis_degree' in text
    # the triage branches are drawn in their outcome's colour
    lines = [x for x in text.splitlines() if re.match(r"    \w+ -", x)]
    ok = next(i for i, x in enumerate(lines) if x.startswith('    triage -->|"OK"|'))
    assert f"linkStyle {ok} stroke:{LEVEL_COLOURS['OK']}" in text


def test_mermaid_escapes_labels_and_renames_reserved_ids(tmp_path: Path) -> None:
    def edit(d: Any) -> None:
        d["nodes"]["end"] = d["nodes"].pop("done")
        d["nodes"]["confirm"]["next"] = "end"
        d["nodes"]["name"]["summary"]["en"] = 'Name "as <you> like" & more'

    text = to_mermaid(load_flow(variant(tmp_path, edit)))
    assert "n_end([" in text and "confirm --> n_end" in text
    assert "Name #quot;as #lt;you#gt; like#quot; #amp; more" in text


def test_mermaid_speaks_russian() -> None:
    text = to_mermaid(intake_flow(), lang="ru")
    assert "Срочные признаки" in text and '"иначе"' in text


# --- SVG ----------------------------------------------------------------------


def test_svg_is_valid_and_names_every_node() -> None:
    flow = intake_flow()
    svg = to_svg(flow)
    texts = svg_texts(svg)
    graph = build_graph(flow)
    for node in graph.nodes:
        assert node.id in texts
    assert "Emergency signs" in texts
    root = ET.fromstring(svg.encode())
    groups = [g for g in root.iter(f"{SVG}g") if g.get("id", "").startswith("node-")]
    assert len(groups) == len(flow.nodes)
    lines = list(root.iter(f"{SVG}polyline"))
    assert len(lines) == len(graph.edges)
    assert all(line.get("marker-end", "").startswith("url(#arrow") for line in lines)
    assert any(line.get("stroke-dasharray") for line in lines)  # the emergency interrupt
    assert {line.get("stroke") for line in lines} >= {LEVEL_COLOURS[lv] for lv in LEVELS}
    assert float(root.get("width", "0")) < 2000


def test_svg_escapes_labels(tmp_path: Path) -> None:
    def edit(d: Any) -> None:
        d["nodes"]["name"]["summary"]["en"] = "Fish & <chips>"

    texts = svg_texts(to_svg(load_flow(variant(tmp_path, edit))))
    assert "Fish & <chips>" in texts


def test_svg_in_russian() -> None:
    texts = svg_texts(to_svg(intake_flow(), lang="ru"))
    assert "Срочные признаки" in texts and "welcome" in texts


# --- PNG ----------------------------------------------------------------------


def open_png(data: bytes) -> Image.Image:
    assert data.startswith(PNG_SIGNATURE)
    image = Image.open(io.BytesIO(data))
    image.load()
    assert image.format == "PNG"
    return image


def test_png_is_a_plausible_picture() -> None:
    image = open_png(to_png(intake_flow()))
    width, height = image.size
    assert 500 <= width <= 4000 and 1500 <= height <= 6000
    # not blank: the flow's colours are on it
    colours = {c for _, c in image.convert("RGB").getcolors(1 << 20) or []}
    assert len(colours) > 50


def test_png_in_russian_is_drawn_with_latin_letters_when_the_font_lacks_cyrillic() -> None:
    image = open_png(to_png(intake_flow(), lang="ru"))
    assert image.size[0] <= 4000
    printer = _Printer(ImageFont.load_default(size=12))
    drawn = printer("Срочные признаки → щука, Ёж «ок»")
    assert all(printer.covers(c) for c in drawn)
    if not printer.covers("Я"):  # Pillow's built-in font today
        assert drawn == "Srochnye priznaki -> shchuka, Ezh «ok»"


@pytest.mark.skipif(not DEJAVU.exists(), reason="no DejaVu font on this machine")
def test_png_draws_cyrillic_with_a_font_the_caller_passes() -> None:
    font = DEJAVU.read_bytes()
    open_png(to_png(intake_flow(), lang="ru", font=font))
    printer = _Printer(ImageFont.truetype(io.BytesIO(font), 12))
    assert printer("Срочные признаки") == "Срочные признаки"


def wide_flow(tmp_path: Path, count: int) -> Flow:
    def edit(d: Any) -> None:
        options = d["nodes"]["welcome"]["options"]
        for k in range(count):
            d["nodes"][f"end_{k}"] = {"kind": "end", "text": {"ru": f"Конец {k}", "en": f"End {k}"}}
            label = {"ru": f"Вариант {k}", "en": f"Option {k}"}
            options.append({"id": f"o{k}", "label": label, "goto": f"end_{k}"})

    return load_flow(variant(tmp_path, edit))


def test_a_very_wide_flow_is_scaled_down_to_a_sensible_png(tmp_path: Path) -> None:
    flow = wide_flow(tmp_path, 24)
    graph: Graph = build_graph(flow)
    assert max(len(row) for row in graph.rows) >= 24
    assert float(ET.fromstring(to_svg(flow).encode()).get("width", "0")) > 4000
    width, height = open_png(to_png(flow)).size
    assert width <= 4000 and height > 100
