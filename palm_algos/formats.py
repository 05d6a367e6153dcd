"""The PALM submission format and the grand-challenge protocol, named once.

The writing side (``writers``, ``serve``) and the reading side (``evaluation``) both import
these names, so a renamed file, column or slug changes both at once instead of passing each
side's tests and breaking only between the containers. Standard library only: the evaluation
container and the algorithm containers import it at start.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import PurePosixPath

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".mha")  # every image read
MASK_SUFFIXES = (".bmp", ".png")  # PALM masks: 0 = disc, 255 = background
INPUT_SLUG = "color-fundus-image"  # grand-challenge's input socket
GC_IMAGE_SUFFIXES = (".mha", ".tif", ".tiff")  # grand-challenge images: the formats with a world geometry


@dataclass(frozen=True)
class TaskFormat:
    """What one task's results look like outside the program: the PALM file and the
    grand-challenge output socket."""

    task: str
    palm_file: str  # what the task writes in PALM mode: a CSV, or the folder of masks
    columns: tuple[str, ...]  # the CSV's header; () for masks
    slug: str  # the default output socket
    kind: str  # the socket's interface kind, as grand-challenge displays it
    # The interface kinds of the output, as predictions.json names them (the display name or
    # grand-challenge's short code, any case), in order of preference.
    kinds: tuple[tuple[str, ...], ...]
    relative_path: str  # the socket's relative_path (a JSON value, or an image's folder)
    output_file: str  # the file an algorithm writes there, below its output folder


FORMATS = {f.task: f for f in (
    TaskFormat("classification", "Classification_Results.csv", ("FileName", "PM Risk"),
               "pathologic-myopia-likelihood", "Float", (("float", "flt"),), "{slug}.json", "{slug}.json"),
    TaskFormat("fovea", "Fovea_Localization_Results.csv", ("FileName", "Fovea_X", "Fovea_Y"),
               "fovea", "Point", (("point", "poin", "2d point"),), "{slug}.json", "{slug}.json"),
    # the disc mask is a Segmentation, else an Image output
    TaskFormat("disc", "Disc_Segmentation", (), "optic-disc-segmentation", "Segmentation",
               (("segmentation", "seg"), ("image", "img")), "images/{slug}", "images/{slug}/output.mha"),
)}
TASKS = tuple(FORMATS)

# Views of FORMATS for the writers and the containers' entry point.
CSV_NAMES = {t: f.palm_file for t, f in FORMATS.items() if f.columns}
PALM_COLUMNS = {t: f.columns for t, f in FORMATS.items() if f.columns}
DISC_FOLDER = FORMATS["disc"].palm_file
DISC_PNG_FOLDER = "png"  # Disc_Segmentation/png/: `palm predict --png`'s copies of the BMPs, never scored
OUTPUT_SLUGS = {t: f.slug for t, f in FORMATS.items()}


def gc_relative_path(task: str, slug: str) -> str:
    """The relative_path of the output socket ``slug`` of ``task``."""
    return FORMATS[task].relative_path.format(slug=slug)


def gc_output_file(task: str, slug: str) -> str:
    """The relative path grand-challenge expects the output of ``task`` at, for socket ``slug``."""
    return FORMATS[task].output_file.format(slug=slug)


def interface(value: dict) -> dict:
    """The socket description of an inputs.json / predictions.json value ({} when malformed):
    grand-challenge calls it "interface"; newer exports call the same thing "socket"."""
    found = value.get("interface") or value.get("socket") or {}
    return found if isinstance(found, dict) else {}


def name_problem(name: str) -> str | None:
    """Why ``name`` cannot be a result's file name (a PALM CSV's FileName, a mask's or a job's
    image name), or None. The one rule: prediction refuses to write such a name, evaluation to
    read one. A name is a bare file name in UTF-8, without a folder separator of any system
    (``/``, ``\\``) and without spaces around it (which CSV readers trim); ``:`` and other
    characters Linux allows are fine."""
    if name in ("", ".", ".."):
        return "is not a file name"
    if "/" in name or "\\" in name:
        return "must be a bare file name such as P0001.jpg, without a folder separator ('/' or '\\')"
    if name != name.strip():
        return "starts or ends with a space, which CSV readers trim away; rename the file"
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        return ("is not valid UTF-8 (made on another system?), so it cannot be listed in the UTF-8 results CSV; "
                "rename the file (e.g. convmv -f latin1 -t utf8) and run it again")
    return None


def stays_below(relative: str) -> bool:
    """Whether ``relative`` (``\\`` read as ``/``) names a path below its root: neither absolute
    nor climbing with ``..``. Links are the caller's to check, on the real folder."""
    path = PurePosixPath(str(relative).replace("\\", "/"))
    return not path.is_absolute() and ".." not in path.parts
