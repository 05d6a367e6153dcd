"""The PALM submission format and the grand-challenge protocol, named once.

The writing side (``writers``, ``serve``) and the reading side (``evaluation``) both import
these names, so a renamed file, column or slug changes both at once instead of passing each
side's tests and breaking only between the containers. Standard library only: the evaluation
container and the algorithm containers import it at start.
"""

from __future__ import annotations

from pathlib import PurePosixPath

TASKS = ("classification", "fovea", "disc")
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".mha")  # every image read

# -- the PALM submission layout --------------------------------------------------------------

CSV_NAMES = {"classification": "Classification_Results.csv", "fovea": "Fovea_Localization_Results.csv"}
DISC_FOLDER = "Disc_Segmentation"
DISC_PNG_FOLDER = "png"  # Disc_Segmentation/png/: `palm predict --png`'s copies of the BMPs, never scored
PALM_FILES = {**CSV_NAMES, "disc": DISC_FOLDER}  # what each task writes in PALM mode
PALM_COLUMNS = {
    "classification": ("FileName", "PM Risk"),
    "fovea": ("FileName", "Fovea_X", "Fovea_Y"),
}
MASK_SUFFIXES = (".bmp", ".png")  # PALM masks: 0 = disc, 255 = background

# -- grand-challenge --------------------------------------------------------------------------

INPUT_SLUG = "color-fundus-image"
OUTPUT_SLUGS = {
    "classification": "pathologic-myopia-likelihood",
    "fovea": "fovea",
    "disc": "optic-disc-segmentation",
}
KIND_NAMES = {"classification": "Float", "fovea": "Point", "disc": "Segmentation"}
# The interface kinds of each task's output, as predictions.json names them (the display name
# or grand-challenge's short code, any case), in order of preference: the disc mask is a
# Segmentation, else an Image output.
OUTPUT_KINDS = {
    "classification": (("float", "flt"),),
    "fovea": (("point", "poin", "2d point"),),
    "disc": (("segmentation", "seg"), ("image", "img")),
}
# Each output socket's relative_path (a JSON value, or an image's folder), and the file an
# algorithm writes there, below its output folder.
GC_RELATIVE_PATHS = {"classification": "{slug}.json", "fovea": "{slug}.json", "disc": "images/{slug}"}
GC_OUTPUT_FILES = {"classification": "{slug}.json", "fovea": "{slug}.json", "disc": "images/{slug}/output.mha"}
GC_IMAGE_SUFFIXES = (".mha", ".tif", ".tiff")  # grand-challenge images: the formats with a world geometry


def gc_output_file(task: str, slug: str) -> str:
    """The relative path grand-challenge expects the output of ``task`` at, for socket ``slug``."""
    return GC_OUTPUT_FILES[task].format(slug=slug)


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
