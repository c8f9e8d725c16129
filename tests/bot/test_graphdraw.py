"""The dialogue's picture: a valid PNG or SVG with real Cyrillic, and a CLI that litters nothing."""

from __future__ import annotations

import dataclasses
import io
import re
import shutil
import subprocess
import warnings
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from fontTools.ttLib import TTFont
from PIL import Image, ImageChops, ImageDraw, ImageFont
from typer.testing import CliRunner

from bot.cli import app
from bot.graphdraw import MAX_PNG_SIDE, font_file, render, to_png, to_svg
from flows import describe, shipped_flow_path
from flows.graph import LEVEL_COLOURS, Graph
from tests.factories import intake_flow
from tests.flows.test_graph import wide_flow

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
SVG = "{http://www.w3.org/2000/svg}"
RUNNER = CliRunner()


def open_png(data: bytes) -> Image.Image:
    assert data.startswith(PNG_SIGNATURE)
    image = Image.open(io.BytesIO(data))
    image.load()
    assert image.format == "PNG"
    return image.convert("RGB")


def drawn_texts(graph: Graph) -> list[str]:
    out = [graph.title, *(t for _, t in graph.outcomes), *(r.answers for r in graph.rules)]
    out += [n.label for n in graph.nodes] + [n.asked_if for n in graph.nodes]
    return out + [e.label for e in graph.edges] + [graph.word(k) for k in ("rules", "skipped")]


def missing_glyph_warnings(graph: Graph) -> list[str]:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        render(graph, "png")
    return [str(w.message) for w in caught if "missing from" in str(w.message)]


# --- the font ----------------------------------------------------------------------------


def test_the_font_has_a_glyph_for_every_letter_of_the_russian_picture() -> None:
    cmap = TTFont(font_file()).getBestCmap()
    letters = {ch for text in drawn_texts(describe(intake_flow(), lang="ru")) for ch in text}
    assert set("Начало«»") <= letters
    missing = sorted(ch for ch in letters if ch.strip() and ord(ch) not in cmap)
    assert missing == []


def glyph(font: ImageFont.FreeTypeFont, ch: str) -> Image.Image:
    image = Image.new("L", (60, 60))
    ImageDraw.Draw(image).text((5, 5), ch, font=font, fill=255)
    return image


def test_cyrillic_is_drawn_with_real_glyphs_not_the_missing_box() -> None:
    font = ImageFont.truetype(str(font_file()), 40)
    unknown = "\U0010fffd"  # a private character no font has: it draws the .notdef box
    assert ord(unknown) not in TTFont(font_file()).getBestCmap()
    tofu = glyph(font, unknown)
    assert tofu.getbbox() is not None  # the box is visible, so equal pixels would mean tofu
    for ch in "Начало":
        drawn = glyph(font, ch)
        assert drawn.getbbox() is not None, ch
        assert ImageChops.difference(drawn, tofu).getbbox() is not None, ch


def test_the_russian_png_has_no_missing_glyph_while_a_missing_one_is_noticed() -> None:
    graph = describe(intake_flow(), lang="ru")
    assert missing_glyph_warnings(graph) == []
    # the check can fail: a letter DejaVu Sans lacks is reported
    assert missing_glyph_warnings(dataclasses.replace(graph, title="漢字"))


# --- PNG and SVG ---------------------------------------------------------------------------


@pytest.mark.parametrize("lang", ["ru", "en"])
def test_the_png_is_a_picture_telegram_accepts_with_every_outcome_colour(lang: str) -> None:
    image = open_png(to_png(intake_flow(), lang=lang))  # type: ignore[arg-type]
    width, height = image.size
    assert 800 <= width <= MAX_PNG_SIDE and 1500 <= height <= MAX_PNG_SIDE
    assert width + height <= 10000  # Telegram's limit for a photo
    colours = {c for _, c in image.getcolors(1 << 22) or []}
    for level, hex_colour in LEVEL_COLOURS.items():
        rgb = tuple(int(hex_colour[k : k + 2], 16) for k in (1, 3, 5))
        assert rgb in colours, level  # the outcome badges and rules are coloured


def test_the_svg_is_valid_and_its_text_is_drawn_as_outlines() -> None:
    root = ET.fromstring(to_svg(intake_flow(), lang="ru"))
    assert root.tag == f"{SVG}svg"
    assert not list(root.iter(f"{SVG}text"))  # no font needed in the viewer
    assert len(list(root.iter(f"{SVG}path"))) > 100


# --- flows graph -------------------------------------------------------------------------------


@pytest.fixture
def clean_checkout(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A git working tree holding a flow file, committed: the folder the command runs in."""
    work = tmp_path / "work"
    work.mkdir()
    shutil.copy(shipped_flow_path(), work / "intake.yaml")
    for args in (["init", "-q"], ["add", "."], ["-c", "user.name=t", "-c", "user.email=t@t",
                                                 "commit", "-qm", "flow"]):  # fmt: skip
        subprocess.run(["git", *args], cwd=work, check=True)
    monkeypatch.chdir(work)  # also: no .env of the developer's
    return work


def git_status(work: Path) -> str:
    done = subprocess.run(
        ["git", "status", "--porcelain", "--untracked-files=all"],
        cwd=work, check=True, capture_output=True, text=True,
    )  # fmt: skip
    return done.stdout


def graph_cli(*args: str) -> tuple[int, bytes, str]:
    result = RUNNER.invoke(app, ["flows", "graph", "intake.yaml", *args],
                           env={"TELEGRAM_TOKEN": ""})  # fmt: skip
    return result.exit_code, result.stdout_bytes, result.stderr


def test_a_png_without_o_goes_to_a_new_temporary_folder(clean_checkout: Path) -> None:
    code, out, err = graph_cli("--format", "png", "--lang", "ru")
    assert code == 0, err
    match = re.fullmatch(r"Wrote (.+)\.\n", out.decode())
    assert match, out
    picture = Path(match.group(1))
    try:
        assert picture.name == "intake.png" and picture.is_absolute()
        assert clean_checkout not in picture.parents
        open_png(picture.read_bytes())
    finally:
        shutil.rmtree(picture.parent)
    assert git_status(clean_checkout) == ""


@pytest.mark.parametrize(("fmt", "start"), [("svg", b"<?xml"), ("mermaid", b"%%")])
def test_text_formats_without_o_go_to_standard_output(
    clean_checkout: Path, fmt: str, start: bytes
) -> None:
    code, out, err = graph_cli("--format", fmt)
    assert code == 0, err
    assert out.startswith(start)
    assert b"emergency_stop" in out or b"<svg" in out
    assert git_status(clean_checkout) == ""


def test_with_o_the_picture_goes_where_asked(clean_checkout: Path, tmp_path: Path) -> None:
    target = tmp_path / "out" / "g.png"
    target.parent.mkdir()
    code, out, err = graph_cli("--format", "png", "-o", str(target))
    assert code == 0, err
    assert out.decode() == f"Wrote {target}.\n"
    open_png(target.read_bytes())
    assert git_status(clean_checkout) == ""


def test_a_very_wide_flow_still_fits_a_telegram_photo(tmp_path: Path) -> None:
    width, height = open_png(to_png(wide_flow(tmp_path, 24), lang="ru")).size
    assert width <= MAX_PNG_SIDE and height <= MAX_PNG_SIDE and width + height <= 10000
    assert width > height  # drawn at full width, scaled down, not cut
