"""Colour-coded label images -> index maps for sed-eval, with the vocabulary file of the class names.

A dataset whose labels are painted in colours is one `ColourTable` away: an ordered list of
(class name, RGB colour) plus the colours that mean "unlabelled", which become the ignore index.
CamVid's table is built in (its 32 colours: 31 classes and Void, the unlabelled colour); any other
comes from a JSON file of the same shape as the `colours.json` the converter writes:

    {"classes": [{"name": "road", "colour": [128, 64, 128]}, {"name": "sky", "colour": "#808080"}],
     "ignore": [[0, 0, 0]], "label_suffix": "_L"}

Class ids are positions in "classes". A name may list synonyms separated by ", " (SED averages
their embeddings); "source" may keep the dataset's own spelling. Pixels of a colour in neither list
become the ignore index and are reported.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from sed_deploy.core.errors import ConfigError, ImageError, first_line
from sed_deploy.core.fileio import atomic_write, write_json

from .dataset import IMAGE_SUFFIXES, Problem, check_ignore_index
from .metrics import EvaluationError

Colour = tuple[int, int, int]
VOCABULARY_FILE = "vocabulary.txt"
TABLE_FILE = "colours.json"


@dataclass(frozen=True)
class ColourTable:
    """The colours of a colour-coded dataset.

    Attributes:
        dataset: a short name, used in messages and the vocabulary file's header.
        names: class names for SED, index = class id.
        colours: RGB colour of each class.
        ignore: colours of unlabelled pixels (-> the ignore index).
        sources: the dataset's own class names (same order), when they differ from `names`.
        label_suffix: ending of a label file's stem that the image's stem lacks (CamVid: "_L").
    """

    dataset: str
    names: tuple[str, ...]
    colours: tuple[Colour, ...]
    ignore: tuple[Colour, ...] = ()
    sources: tuple[str, ...] = ()
    label_suffix: str = ""

    def __post_init__(self) -> None:
        if not self.names or len(self.names) != len(self.colours):
            raise ConfigError(f"colour table {self.dataset}: expected one colour per class name, got "
                              f"{len(self.names)} names and {len(self.colours)} colours")
        seen: dict[Colour, str] = {}
        for name, colour in [*zip(self.names, self.colours, strict=True), *(("(ignore)", c) for c in self.ignore)]:
            if colour in seen:
                raise ConfigError(f"colour table {self.dataset}: colour {hex_colour(colour)} is given to both "
                                  f"{seen[colour]!r} and {name!r}")
            seen[colour] = name

    def to_json(self) -> dict:
        sources = self.sources or (None,) * len(self.names)
        classes = [{"name": n, "colour": list(c), **({"source": s} if s else {})}
                   for n, c, s in zip(self.names, self.colours, sources, strict=True)]
        return {"dataset": self.dataset, "classes": classes, "ignore": [list(c) for c in self.ignore],
                "label_suffix": self.label_suffix}


def hex_colour(colour: Colour) -> str:
    return "#{:02x}{:02x}{:02x}".format(*colour)


# CamVid (Brostow et al., "Semantic object classes in video", Pattern Recognition Letters 2009): the
# colours of its label_colors.txt; names rewritten in words for the text encoder.
_CAMVID = (
    ("Animal", "animal", (64, 128, 64)),
    ("Archway", "archway", (192, 0, 128)),
    ("Bicyclist", "bicyclist, cyclist", (0, 128, 192)),
    ("Bridge", "bridge", (0, 128, 64)),
    ("Building", "building", (128, 0, 0)),
    ("Car", "car", (64, 0, 128)),
    ("CartLuggagePram", "cart, luggage, pram", (64, 0, 192)),
    ("Child", "child", (192, 128, 64)),
    ("Column_Pole", "pole, column", (192, 192, 128)),
    ("Fence", "fence", (64, 64, 128)),
    ("LaneMkgsDriv", "lane marking", (128, 0, 192)),
    ("LaneMkgsNonDriv", "non-driving lane marking", (192, 0, 64)),
    ("Misc_Text", "text", (128, 128, 64)),
    ("MotorcycleScooter", "motorcycle, scooter", (192, 0, 192)),
    ("OtherMoving", "moving object", (128, 64, 64)),
    ("ParkingBlock", "parking block", (64, 192, 128)),
    ("Pedestrian", "pedestrian", (64, 64, 0)),
    ("Road", "road", (128, 64, 128)),
    ("RoadShoulder", "road shoulder", (128, 128, 192)),
    ("Sidewalk", "sidewalk", (0, 0, 192)),
    ("SignSymbol", "sign, symbol", (192, 128, 128)),
    ("Sky", "sky", (128, 128, 128)),
    ("SUVPickupTruck", "suv, pickup truck", (64, 128, 192)),
    ("TrafficCone", "traffic cone", (0, 0, 64)),
    ("TrafficLight", "traffic light", (0, 64, 64)),
    ("Train", "train", (192, 64, 128)),
    ("Tree", "tree", (128, 128, 0)),
    ("Truck_Bus", "truck, bus", (192, 128, 192)),
    ("Tunnel", "tunnel", (64, 0, 64)),
    ("VegetationMisc", "vegetation", (192, 192, 0)),
    ("Wall", "wall", (64, 192, 0)),
)
CAMVID = ColourTable(
    dataset="camvid",
    names=tuple(n for _, n, _ in _CAMVID),
    colours=tuple(c for _, _, c in _CAMVID),
    ignore=((0, 0, 0),),  # Void
    sources=tuple(s for s, _, _ in _CAMVID),
    label_suffix="_L",
)
TABLES = {"camvid": CAMVID}


def _parse_colour(value, where: str) -> Colour:
    if isinstance(value, str) and len(value) == 7 and value.startswith("#"):
        try:
            return tuple(int(value[i:i + 2], 16) for i in (1, 3, 5))
        except ValueError:
            pass
    elif isinstance(value, list) and len(value) == 3 and all(isinstance(v, int) and 0 <= v <= 255 for v in value):
        return tuple(value)
    raise ConfigError(f"{where}: expected a colour [r, g, b] (0-255) or \"#rrggbb\", got {value!r}")


def table_from_json(path: str | Path) -> ColourTable:
    """Read a colour table (the module docstring shows the format); one-line `ConfigError` if malformed."""
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"cannot read colour table {path}: {exc.strerror or exc}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"colour table {path} is not valid JSON ({first_line(exc)})") from None
    if not isinstance(data, dict) or not isinstance(data.get("classes"), list) or not data["classes"]:
        raise ConfigError(f"colour table {path}: expected an object with a non-empty list \"classes\"")
    names, colours, sources = [], [], []
    for i, entry in enumerate(data["classes"]):
        where = f"colour table {path}, class #{i}"
        if not isinstance(entry, dict) or not isinstance(entry.get("name"), str) or not entry["name"].strip():
            raise ConfigError(f"{where}: expected {{\"name\": ..., \"colour\": [r, g, b]}}, got {entry!r}")
        names.append(entry["name"])
        colours.append(_parse_colour(entry.get("colour", entry.get("color")), where))
        sources.append(str(entry.get("source", "")))
    ignore = tuple(_parse_colour(c, f"colour table {path}, ignore #{i}") for i, c in enumerate(data.get("ignore", [])))
    return ColourTable(dataset=str(data.get("dataset", path.stem)), names=tuple(names), colours=tuple(colours),
                       ignore=ignore, sources=tuple(sources) if any(sources) else (),
                       label_suffix=str(data.get("label_suffix", "")))


def _keys(rgb: np.ndarray) -> np.ndarray:
    rgb = rgb.astype(np.int32)
    return (rgb[..., 0] << 16) | (rgb[..., 1] << 8) | rgb[..., 2]


def colours_to_index(rgb: np.ndarray, table: ColourTable, ignore_index: int = 255
                     ) -> tuple[np.ndarray, np.ndarray, int]:
    """RGB label image [H,W,3] uint8 -> (class ids [H,W] int64, unknown colours [U,3] uint8, unknown pixels).

    Ignore colours and unknown colours both become `ignore_index`.
    """
    colours = np.asarray(table.colours + table.ignore, dtype=np.uint8).reshape(-1, 3)
    values = np.concatenate([np.arange(len(table.names)), np.full(len(table.ignore), ignore_index)]).astype(np.int64)
    keys = _keys(colours)
    order = np.argsort(keys)
    keys, values = keys[order], values[order]
    pixels = _keys(rgb)
    slot = np.minimum(np.searchsorted(keys, pixels), len(keys) - 1)
    known = keys[slot] == pixels
    index = np.where(known, values[slot], ignore_index)
    unknown = np.unique(pixels[~known])
    unknown_rgb = np.stack([(unknown >> 16) & 255, (unknown >> 8) & 255, unknown & 255], axis=-1).astype(np.uint8)
    return index, unknown_rgb, int((~known).sum())


def read_colour_label(path: Path) -> np.ndarray:
    """A colour-coded label image as RGB uint8 [H,W,3]; `ImageError` if it is not a colour image."""
    try:
        with Image.open(path) as image:
            image.load()
            if image.mode not in ("RGB", "RGBA", "P"):
                raise ImageError(f"{path}: expected a colour-coded label (RGB or palette), got mode {image.mode}")
            return np.asarray(image.convert("RGB"))
    except UnidentifiedImageError:
        raise ImageError(f"{path}: not an image Pillow can decode") from None
    except (OSError, ValueError, SyntaxError) as exc:
        raise ImageError(f"{path}: cannot decode label ({first_line(exc)})") from None


def index_png(index: np.ndarray, largest: int) -> Image.Image:
    """8-bit when every value fits, else 16-bit."""
    return Image.fromarray(index.astype(np.uint8 if largest <= 255 else np.uint16))


@dataclass
class Conversion:
    """What `convert_folder` did."""

    converted: int
    problems: list[Problem]
    unknown_pixels: int
    vocabulary: Path


def write_vocabulary(table: ColourTable, out: Path, ignore_index: int) -> Path:
    header = [f"# {table.dataset}: {len(table.names)} classes; a class id is its position among the names, from 0",
              f"# written by sed-eval convert; unlabelled colours are the ignore index {ignore_index}"]
    path = out / VOCABULARY_FILE
    with atomic_write(path, "w") as f:
        f.write("\n".join(header + list(table.names)) + "\n")
    write_json(out / TABLE_FILE, table.to_json())
    return path


def convert_folder(table: ColourTable, rgb_labels: str | Path, out: str | Path, ignore_index: int = 255,
                   label_suffix: str | None = None, report=print) -> Conversion:
    """Convert every colour label image of a folder into an index PNG, and write the vocabulary file.

    Args:
        table: the dataset's colours.
        rgb_labels: folder of colour-coded label images.
        out: output folder: `<stem>.png` per label (the label suffix removed from the stem, so
            that it matches its image), `vocabulary.txt` and `colours.json`.
        ignore_index: value of unlabelled and unknown pixels.
        label_suffix: overrides the table's.
        report: called with one line per problem.
    """
    check_ignore_index(ignore_index)
    if ignore_index < len(table.names):
        raise EvaluationError(f"the ignore index {ignore_index} is a class id of the {len(table.names)} classes; "
                              f"choose one >= {len(table.names)} (255 by default)")
    source, out = Path(rgb_labels), Path(out)
    if not source.is_dir():
        raise EvaluationError(f"colour label folder {source} does not exist or is not a folder")
    suffix = table.label_suffix if label_suffix is None else label_suffix
    files = sorted(p for p in source.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
                   and not p.name.startswith("."))
    problems, unknown_total, converted = [], 0, 0
    largest = max(len(table.names) - 1, ignore_index)
    for path in files:
        try:
            index, unknown, count = colours_to_index(read_colour_label(path), table, ignore_index)
        except ImageError as exc:
            problems.append(Problem("unreadable", str(path), first_line(exc).removeprefix(f"{path}: ")))
            report(str(problems[-1]))
            continue
        if len(unknown):
            unknown_total += count
            shown = ", ".join(hex_colour(tuple(int(v) for v in c)) for c in unknown[:5])
            problems.append(Problem("unknown colour", str(path), f"{count} pixel(s) of {len(unknown)} colour(s) not in "
                                    f"the {table.dataset} table ({shown}{', ...' if len(unknown) > 5 else ''}); "
                                    f"set to the ignore index {ignore_index}"))
            report(str(problems[-1]))
        stem = path.stem[: -len(suffix)] if suffix and path.stem.endswith(suffix) else path.stem
        with atomic_write(out / f"{stem}.png") as f:
            index_png(index, largest).save(f, format="PNG")
        converted += 1
    if not converted:
        raise EvaluationError(f"no colour label image could be converted in {source} "
                              f"({len(files)} image file(s), {len(problems)} problem(s))")
    return Conversion(converted, problems, unknown_total, write_vocabulary(table, out, ignore_index))

