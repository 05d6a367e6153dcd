"""What differs between the three PALM tasks, and nothing more.

A task knows: which cases it can learn from, the target a case yields (as a torchvision
tv_tensor so that one v2 transform moves image and target together), its augmentation, its
loss, its validation metric, and how a raw model output becomes a prediction in original
image pixels. The training loop, the dataset and the predictor are shared.
"""

from __future__ import annotations

import math
from typing import Any, Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torchvision import tv_tensors
from torchvision.transforms import v2

from . import models
from .anatomy import ANGLE_GATE, FOVEA_ANGLE
from .cases import Case
from .errors import PalmError
from .fov import Frame, as_frame, crop, lit

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class RandomVarianceGaussianNoise(v2.Transform):
    """Additive Gaussian noise whose variance is drawn per image (Xie et al.: mean 0.01,
    variance in [0.01, 0.05], on [0, 1] intensities). Only images are touched."""

    _transformed_types = (tv_tensors.Image,)

    def __init__(self, mean: float = 0.01, variance: tuple[float, float] = (0.01, 0.05), p: float = 0.5):
        super().__init__()
        self.mean, self.variance, self.p = mean, variance, p

    def make_params(self, flat_inputs: list[Any]) -> dict[str, Any]:
        apply = torch.rand(()) < self.p
        variance = torch.empty(()).uniform_(*self.variance).item()
        return {"apply": bool(apply), "sigma": math.sqrt(variance)}

    def transform(self, inpt: Any, params: dict[str, Any]) -> Any:
        if not params["apply"]:
            return inpt
        return v2.functional.gaussian_noise(inpt, mean=self.mean, sigma=params["sigma"], clip=True)


class RandomGamma(v2.Transform):
    """Gamma drawn per image from ``gamma`` (a camera's tone curve); only images are touched."""

    _transformed_types = (tv_tensors.Image,)

    def __init__(self, gamma: tuple[float, float] = (0.6, 1.6)):
        super().__init__()
        self.gamma = gamma

    def make_params(self, flat_inputs: list[Any]) -> dict[str, Any]:
        low, high = (math.log(g) for g in self.gamma)
        return {"gamma": math.exp(torch.empty(()).uniform_(low, high).item())}

    def transform(self, inpt: Any, params: dict[str, Any]) -> Any:
        return v2.functional.adjust_gamma(inpt, params["gamma"])


class RandomJpeg(v2.Transform):
    """JPEG compression at a quality drawn per image from ``quality`` (a clinic's export), by
    Pillow: torchvision's JPEG needs its image library, which the CPU images leave out."""

    _transformed_types = (tv_tensors.Image,)

    def __init__(self, quality: tuple[int, int] = (30, 95)):
        super().__init__()
        self.quality = quality

    def make_params(self, flat_inputs: list[Any]) -> dict[str, Any]:
        return {"quality": int(torch.randint(self.quality[0], self.quality[1] + 1, ()).item())}

    def transform(self, inpt: Any, params: dict[str, Any]) -> Any:
        import io

        from PIL import Image

        buffer = io.BytesIO()
        Image.fromarray(inpt.permute(1, 2, 0).numpy()).save(buffer, "JPEG", quality=params["quality"])
        decoded = np.asarray(Image.open(buffer).convert("RGB"))
        return tv_tensors.wrap(torch.from_numpy(decoded.copy()).permute(2, 0, 1), like=inpt)


class RandomSquareFrame(v2.Transform):
    """The photograph as a camera with a squarer sensor frames it: on the squashed square input
    its rows shrunk by a factor drawn from ``rows`` and black rows padded back above and below
    (images, masks and points alike). A 3:2 photograph padded to a square is the factor 2/3:
    the eye then looks wider than in the 3:2 photographs a model learned from."""

    def __init__(self, rows: tuple[float, float] = (2 / 3, 1.0)):
        super().__init__()
        self.rows = rows

    def make_params(self, flat_inputs: list[Any]) -> dict[str, Any]:
        height, width = v2.query_size(flat_inputs)
        kept = round(height * torch.empty(()).uniform_(*self.rows).item())
        top = int(torch.randint(0, height - kept + 1, ()).item())
        return {"size": [kept, width], "padding": [0, top, 0, height - kept - top]}

    def transform(self, inpt: Any, params: dict[str, Any]) -> Any:
        shrunk = v2.functional.resize(inpt, params["size"], antialias=True)
        return v2.functional.pad(shrunk, params["padding"])


def mask_of(flat_inputs: list[Any]) -> np.ndarray | None:
    """The (H, W) mask among a v2 transform's inputs (``DiscTask.target``'s), or None."""
    mask = next((x for x in flat_inputs if isinstance(x, tv_tensors.Mask)), None)
    return mask.as_subclass(torch.Tensor).numpy() if mask is not None else None


def key_points(flat_inputs: list[Any]) -> list[list[float]]:
    """The (x, y) key points among a v2 transform's inputs (``FoveaTask.target``'s fovea and
    disc centre, in input pixels); none where there are none."""
    points = next((x for x in flat_inputs if isinstance(x, tv_tensors.KeyPoints)), None)
    return points.as_subclass(torch.Tensor).reshape(-1, 2).tolist() if points is not None else []


class RandomAtrophy(v2.Transform):
    """Pale chorioretinal atrophy painted beside the optic disc, as pathologic myopia shows it:
    a crescent or ring around the disc, larger and paler than it, on the fovea's side (or a side
    drawn where the fovea is unknown), and with probability ``patches`` pale patches elsewhere
    in the field of view; the disc itself and the macula left as they are. A model then learns
    the disc by its rim and vessels, not as the palest thing in view: one that never saw such
    eyes takes the atrophy for the disc (PALM's P photographs, docs/RESULTS.md). Images only;
    the disc (and fovea) come from ``FoveaTask.target``'s key points (x, y in input pixels),
    which v2 shows ``make_params`` only when the transform takes them too (they pass unchanged),
    or from ``DiscTask.target``'s mask: then the atrophy is sized by that disc and never paints
    over it (nor over a centre target's unknown ring), so the mask stays true, and with
    probability ``shade`` the disc itself turns the orange-pink of a myopic disc, darker than
    the atrophy beside it."""

    def __init__(self, p: float = 0.25, patches: float = 0.3, shade: float = 0.0):
        super().__init__()
        self.p, self.patches, self.shade = p, patches, shade

    def make_params(self, flat_inputs: list[Any]) -> dict[str, Any]:
        points, spare, radius, disc_mask = key_points(flat_inputs), None, None, None
        if not points and (disc_mask := mask_of(flat_inputs)) is not None:  # the disc task's target
            spare = disc_mask != 0  # the disc, and a centre target's unknown ring around it
            rows, cols = np.nonzero(disc_mask == 1)
            if len(rows):
                points = [[math.nan, math.nan], [float(cols.mean()), float(rows.mean())]]
                radius = None if (disc_mask == UNKNOWN).any() else math.sqrt(len(rows) / math.pi)
        if len(points) < 2 or not all(map(math.isfinite, points[1])) or not torch.rand(()) < self.p:
            return {"paint": False}
        fovea, disc = points[0], points[1]
        side = math.copysign(1.0, fovea[0] - disc[0]) if all(map(math.isfinite, fovea)) else \
            (1.0 if torch.rand(()) < 0.5 else -1.0)
        u = torch.rand(10).tolist()
        n_patches = int(torch.randint(1, 4, ()).item()) if torch.rand(()) < self.patches else 0
        shade = radius is not None and bool(torch.rand(()) < self.shade)  # a whole disc in the mask
        return {"paint": True, "fovea": fovea, "disc": disc, "side": side, "u": u,
                "patches": torch.rand(n_patches, 4).tolist(), "radius": radius, "spare": spare,
                "shade": (disc_mask == 1, torch.rand(3).tolist()) if shade else None}

    def transform(self, inpt: Any, params: dict[str, Any]) -> Any:
        if not params["paint"] or not isinstance(inpt, tv_tensors.Image):
            return inpt
        image = inpt.as_subclass(torch.Tensor).permute(1, 2, 0).numpy().astype(np.float32)
        painted = paint_atrophy(image, params)
        return tv_tensors.wrap(torch.from_numpy(painted).permute(2, 0, 1).contiguous(), like=inpt)


class RandomFixation(v2.Transform):
    """The eye as a camera aimed elsewhere frames it: a round field centred between the disc and
    the fovea (from the disc itself, as disc-centred protocols shoot, to near the fovea), of
    ``reach`` times their distance in radius, the fovea kept inside ``inside`` of it. One that
    only ever saw macula-centred photographs (IDRiD) learns where the fovea usually lies in the
    frame, and on a disc-centred photograph puts it beside the disc (PALM, docs/RESULTS.md).
    The window is taller than wide by a factor from ``aspect`` (the input squashes a 3:2 photograph
    1.5 times, a 7:6 one 1.17: the field comes out round in some, a little oval in others). Images,
    masks and points alike; the fovea and disc come from ``FoveaTask.target``'s key points."""

    def __init__(self, p: float = 0.3, reach: tuple[float, float] = (1.0, 1.8), inside: float = 0.8,
                 aspect: tuple[float, float] = (1.0, 1.5)):
        super().__init__()
        self.p, self.reach, self.inside, self.aspect = p, reach, inside, aspect

    def make_params(self, flat_inputs: list[Any]) -> dict[str, Any]:
        points = key_points(flat_inputs)
        if len(points) < 2 or not all(map(math.isfinite, points[0] + points[1])) or not torch.rand(()) < self.p:
            return {"aim": False}
        (fx, fy), (dx, dy) = points[0], points[1]
        gap = math.hypot(fx - dx, fy - dy)
        if gap < 1:
            return {"aim": False}
        u = torch.rand(5).tolist()
        t = 0.8 * u[0]  # 0: on the disc, 0.8: near the fovea
        least = max(self.reach[0], (1 - t) / self.inside)
        radius = gap * (least + max(self.reach[1] - least, 0) * u[1])
        cx = dx + t * (fx - dx) + (u[2] - 0.5) * 0.2 * gap
        cy = dy + t * (fy - dy) + (u[3] - 0.5) * 0.2 * gap
        tall = radius * (self.aspect[0] + (self.aspect[1] - self.aspect[0]) * u[4])
        size = v2.query_size(flat_inputs)
        return {"aim": True, "top": round(cy - tall), "left": round(cx - radius), "height": max(round(2 * tall), 2),
                "width": max(round(2 * radius), 2), "size": list(size)}

    def transform(self, inpt: Any, params: dict[str, Any]) -> Any:
        if not params["aim"]:
            return inpt
        if isinstance(inpt, tv_tensors.KeyPoints):  # pixel indices, as FoveaTask.target gives them
            (height, width), top, left = params["size"], params["top"], params["left"]
            scale = torch.tensor([width / params["width"], height / params["height"]])
            moved = (inpt.as_subclass(torch.Tensor) + 0.5 - torch.tensor([left, top])) * scale - 0.5
            return tv_tensors.wrap(moved, like=inpt, canvas_size=(height, width))
        framed = v2.functional.resized_crop(inpt, params["top"], params["left"], params["height"], params["width"],
                                            params["size"], antialias=True)
        if isinstance(inpt, (tv_tensors.Image, tv_tensors.Mask)):
            height, width = params["size"]
            yy, xx = torch.meshgrid(torch.linspace(-1, 1, height), torch.linspace(-1, 1, width), indexing="ij")
            framed = tv_tensors.wrap(framed * (xx**2 + yy**2 <= 1).to(framed.dtype), like=framed)
        return framed


def paint_atrophy(image: np.ndarray, params: dict[str, Any]) -> np.ndarray:
    """``RandomAtrophy``'s painting of (H, W, 3) float ``image`` -> uint8: its sizes in disc
    radii (the disc mask's own radius where given, else DISC_RADIUS of the lit field's extent,
    across and down, as the input squashes it); the ``spare`` pixels left as they are."""
    height, width, _ = image.shape
    inside = lit(image.max(axis=2))
    if inside.sum() < 16:
        return image.astype(np.uint8)
    rx = params.get("radius") or DISC_RADIUS * inside.any(axis=0).sum()
    ry = params.get("radius") or DISC_RADIUS * inside.any(axis=1).sum()
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)

    def ellipse(cx: float, cy: float, ax: float, ay: float) -> np.ndarray:
        """1 inside, 0 outside, a soft edge a pixel wide."""
        reach = np.sqrt(((xx - cx) / ax) ** 2 + ((yy - cy) / ay) ** 2)
        return np.clip((1 - reach) * min(ax, ay), 0, 1)

    u, (dx, dy), side = params["u"], params["disc"], params["side"]
    size = 1.2 + 1.4 * u[0]  # the atrophy's radius: 1.2 to 2.6 disc radii
    ax, ay = size * rx, size * ry * (0.8 + 0.4 * u[1])
    shift = (0.2 + 0.6 * u[2]) * ax  # a ring around the disc (small shift) to a crescent beside it
    pale = ellipse(dx + side * shift, dy + (u[3] - 0.5) * 0.6 * ay, ax, ay)
    keep = (0.8 + 0.25 * u[4])  # the disc itself, a little smaller or larger than DISC_RADIUS
    pale = pale * (1 - ellipse(dx, dy, keep * rx, keep * ry))
    fovea = params["fovea"]
    if all(map(math.isfinite, fovea)):  # the macula stays as it is: the fovea's target must show
        pale = pale * (1 - ellipse(*fovea, 2 * rx, 2 * ry))
    for px, py, pr, pa in params["patches"]:
        cx, cy = px * width, py * height
        r = (0.5 + 1.5 * pr) * rx
        if not inside[min(int(cy), height - 1), min(int(cx), width - 1)] or \
                any(math.isfinite(a) and math.hypot((cx - a) / rx, (cy - b) / ry) < r / rx + 1.5
                    for a, b in (fovea, (dx, dy))):
            continue  # outside the field, or over the disc or the fovea
        pale = np.maximum(pale, ellipse(cx, cy, r, r * ry / rx * (0.7 + 0.6 * pa)))
    pale *= inside
    if params.get("spare") is not None:  # a disc mask's disc (and unknown ring) keeps its pixels
        pale *= ~params["spare"]
    level = np.percentile(image[inside].max(axis=1), 99)
    colour = level * (0.85 + 0.25 * u[5]) * np.array([1.0, 0.75 + 0.2 * u[6], 0.45 + 0.35 * u[7]], np.float32)
    # the retina's own detail (vessels, the choroid's pattern) shows through, stronger or weaker
    from scipy import ndimage

    grey = image.mean(axis=2)
    smooth = ndimage.gaussian_filter(grey, float(rx), mode="reflect", truncate=2.0)  # separable: fast at 512 px
    detail = np.clip(grey / np.maximum(smooth, 1.0), 0.3, 1.5) ** (1 + 1.5 * u[9])
    alpha = (0.6 + 0.35 * u[8]) * pale[..., None]
    paint = np.minimum(colour, 255) * detail[..., None]
    painted = image * (1 - alpha) + paint * alpha
    if params.get("shade") is not None:  # a myopic disc: red kept, green and blue down, a soft rim
        disc, (r, g, b) = params["shade"]
        weight = ndimage.gaussian_filter(disc.astype(np.float32), max(1.0, 0.1 * rx))[..., None]
        factor = np.array([0.85 + 0.15 * r, 0.6 + 0.25 * g, 0.5 + 0.3 * b], np.float32)
        painted = painted * (1 - weight * (1 - factor))
    return np.clip(painted, 0, 255).astype(np.uint8)


def camera_augmentation() -> list[v2.Transform]:
    """What differs between cameras and clinics beyond geometry: colour cast, brightness,
    tone curve, focus and JPEG compression (uint8 images; masks and points pass through)."""
    return [v2.RandomApply([v2.ColorJitter(brightness=0.4, contrast=0.4, saturation=0.4, hue=0.04)], p=0.8),
            v2.RandomApply([RandomGamma()], p=0.5),
            v2.RandomApply([v2.GaussianBlur(5, sigma=(0.1, 1.5))], p=0.3),
            v2.RandomApply([RandomJpeg((30, 95))], p=0.3)]


class Task:
    """Base of the three tasks; subclasses fill in the differences."""

    name: str
    archs: dict[str, Callable[..., nn.Module]]
    default_arch: str
    default_input_size: int
    metric_name: str  # the validation metric that selects the best epoch
    higher_is_better: bool = True
    refines: bool = False  # can learn the refining pass on a window of a larger image (--zoom > 1)
    augmentations: tuple[str, ...] = ("standard",)  # the styles ``augmentation`` knows (--augment)
    default_augment: str = "standard"
    stratifies: bool = False  # hold-outs and folds keep the label ratio
    # What the network sees of a photograph (fov.GEOMETRIES; "fov": the field of view at a fixed
    # diameter) and how its colours are shown (fov.COLOURS: "standardise" in the FOV, "local" its
    # local contrast, "equalise" its grey levels ranked, or "none"); checkpoints record both, and
    # checkpoints made before them read as "squash" and "none".
    default_geometry: str = "squash"
    default_colour: str = "none"
    # The task whose model's disc centre aims this one's refining pass (``heed``): where both
    # run, or as its guide where it runs alone (``Predictor.guided_by``); and this task's
    # architecture that has such a disc head, if any.
    guide_task: str | None = None
    joint_arch: str | None = None

    def build_model(self, arch: str, pretrained: str | None) -> nn.Module:
        """The network of ``arch``, its weights in the channels-last layout: oneDNN's and
        cuDNN's faster convolutions (on the 2-core CPU 10 % faster training, 16-37 % faster
        prediction; the same network, up to float rounding). Inputs may stay as they are."""
        if arch not in self.archs:
            raise PalmError(f"unknown --arch {arch!r} for {self.name}; choose from {', '.join(self.archs)}")
        return self.archs[arch](pretrained=pretrained).to(memory_format=torch.channels_last)

    # -- data ------------------------------------------------------------------------------
    def usable(self, case: Case) -> bool:
        raise NotImplementedError

    def learns_from(self, case: Case, arch: str) -> bool:
        """Whether a model of ``arch`` learns anything from ``case`` (a usable case may hold only
        what another architecture's head learns)."""
        return self.usable(case)

    def scorable(self, case: Case) -> bool:
        """Whether ``case`` has the full ground truth that scoring a prediction needs (a
        task may learn from less: the disc from a centre)."""
        return self.usable(case)

    def left_out(self, cases: list[Case]) -> str | None:
        """A note on cases whose ground truth says the task cannot be learned from them, or None."""
        return None

    def target(self, case: Case, input_size: int, frame: Frame | None = None) -> Any:
        """Ground truth in input coordinates (square, input_size px, showing ``frame`` of the
        original image; None: the whole image), as a tv_tensor when spatial."""
        raise NotImplementedError

    def photometric(self, style: str = "standard") -> list[v2.Transform]:
        """Training's colour, blur and compression changes (and a camera's other field of view)
        on the uint8 stored image, before the colour standardising: other cameras; none by default."""
        return []

    def augmentation(self, style: str = "standard") -> list[v2.Transform]:
        """Transforms applied in training after ``photometric`` (uint8 image in, float out), in
        one of the task's ``augmentations`` styles."""
        raise NotImplementedError

    def to_tensor(self, target: Any) -> torch.Tensor:
        raise NotImplementedError

    # -- learning --------------------------------------------------------------------------
    def loss(self, output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def metrics(self, outputs: torch.Tensor, targets: torch.Tensor) -> dict[str, float]:
        """Validation metrics on concatenated outputs; the key ``metric_name`` is the one to select on."""
        raise NotImplementedError

    # -- prediction ------------------------------------------------------------------------
    def decode(self, output: torch.Tensor, frame: Frame | tuple[int, int]) -> Any:
        """One sample's raw output -> prediction in original pixels, the input having shown
        ``frame`` (or, given an original (w, h), the whole image)."""
        raise NotImplementedError

    def doubt(self, output: torch.Tensor) -> str | None:
        """Why a raw ``output`` cannot be right, for the log beside the image's name, or None:
        what no model can know about a camera or an eye it never saw, the anatomy can."""
        return None

    # -- the refining pass (models trained with zoom > 1; fovea and disc) -------------------
    def view_centres(self, output: torch.Tensor) -> list[tuple[float, float]]:
        """Where the second pass should look, (x, y) in [0, 1] of the image, the likeliest
        first; several: each gets a window and ``window_score`` picks one; none: nowhere."""
        raise NotImplementedError

    def fallback_centre(self, view: torch.Tensor) -> tuple[float, float] | None:
        """A second opinion where ``view_centres`` found nothing: where the refining pass should
        look on the first-pass input ``view`` ((3, S, S) uint8), or None (nowhere)."""
        return None

    def disc_centre(self, output: torch.Tensor) -> tuple[float, float] | None:
        """Where this model's raw ``output`` puts the optic disc, (x, y) in [0, 1] of its input,
        or None: another model's second opinion (``heed``) where both run on an image."""
        return None

    def heed(self, centres: list[tuple[float, float]], disc: tuple[float, float]) -> list[tuple[float, float]]:
        """``view_centres`` given another model's ``disc_centre`` ``disc`` ((x, y) in [0, 1] of
        this model's input): only the disc task listens (``DiscTask.heed``)."""
        return centres

    def window_score(self, window: torch.Tensor) -> float:
        """How sure the refining pass is of what it found in one window's output (the
        highest-scoring window of an image is kept; the first of equals)."""
        return 0.0

    def merge(self, first: torch.Tensor, window: torch.Tensor, box: tuple[int, int, int], big: int) -> torch.Tensor:
        """First-pass output and the output on the window ``box`` = (left, top, size) of the
        ``big`` square image -> one output that ``decode`` reads."""
        raise NotImplementedError

    # -- ensembles and test-time augmentation ----------------------------------------------
    tta_default = True  # flip TTA on unless --no-tta; set from the cross-validation (docs/RESULTS.md)

    def average(self, outputs: torch.Tensor) -> torch.Tensor:
        """(M, B, ...) raw outputs of M models or views -> (B, ...) one output of the same kind
        that ``decode`` reads: mean probabilities for classes, median positions for points."""
        return torch.log(outputs.float().softmax(2).mean(0))  # softmax of this = the mean probabilities

    def flip_back(self, output: torch.Tensor) -> torch.Tensor:
        """A batch's raw output on horizontally flipped images -> as on the images themselves."""
        raise NotImplementedError


class ClassificationTask(Task):
    name, default_arch, default_input_size, metric_name = "classification", "resnet50", 224, "auc"
    archs = {"resnet50": models.resnet50_classifier}
    stratifies = True
    tta_default = False  # the mirror view lowered the AUC (seed ensemble 0.9813 -> 0.9784 over 5 folds, docs/RESULTS.md)

    def usable(self, case):
        return case.label is not None

    def target(self, case, input_size, frame=None):
        return int(case.label)

    def augmentation(self, style="standard"):
        return [v2.RandomRotation(30), v2.ToDtype(torch.float32, scale=True), RandomVarianceGaussianNoise()]

    def to_tensor(self, target):
        return torch.tensor(target, dtype=torch.long)

    def loss(self, output, target):
        return F.cross_entropy(output, target)

    def metrics(self, outputs, targets):
        from sklearn.metrics import roc_auc_score

        risk = outputs.float().softmax(1)[:, 1].numpy()
        y = targets.numpy()
        auc = roc_auc_score(y, risk) if len(np.unique(y)) == 2 else float("nan")
        return {"auc": float(auc), "accuracy": float(((risk >= 0.5) == y).mean()),
                "loss": float(F.cross_entropy(outputs.float(), targets))}

    def decode(self, output, frame):
        return float(output.float().softmax(-1)[..., 1])

    def flip_back(self, output):
        return output


class FoveaTask(Task):
    name, default_arch, default_input_size, metric_name = "fovea", "vgg19-fused", 256, "mean_distance"
    higher_is_better = False
    refines = True
    archs = {"vgg19-fused": models.vgg19_fused, "vgg19": models.vgg19_regressor,
             "resnet50": models.resnet50_regressor, "disc-fovea-heatmaps": models.disc_fovea_heatmaps}
    disc_weight = 0.5  # share of the disc centre's distance in the joint model's loss
    joint_arch = "disc-fovea-heatmaps"  # disc and fovea heat maps: its disc centre guides the disc model
    # the measured recipe (final-fovea): the whole image, colours standardised, the classic
    # augmentation with a camera aimed elsewhere in 3 of 10 views; the field of view and the
    # camera augmentation underfit IDRiD (docs/RESULTS.md)
    default_geometry, default_colour, default_augment = "squash", "standardise", "aimed"
    tta_default = False  # the mirror image made the joint model worse (0.0169 -> 0.0179, docs/RESULTS.md)

    # The joint model's disc head also learns from sources with a disc and no fovea label
    # (Drishti-GS1's and DRIONS's masks: other cameras); their fovea is unknown (NaN), skipped by
    # the loss and never validated on.
    def usable(self, case):
        return case.fovea is not None or case.disc_centre is not None or case.disc_mask is not None

    def scorable(self, case):
        return case.fovea is not None

    def learns_from(self, case, arch):
        return self.scorable(case) or (arch == self.joint_arch and self.usable(case))

    def left_out(self, cases):
        absent = sum(c.fovea_absent for c in cases)
        return f"no fovea position learned from {absent} case(s) marked 'no fovea visible'" if absent else None

    # Positions are pixel indices (pixel centres at integers), as torchvision's keypoint flips
    # assume; the normalised target (x + 0.5 - left) / width is then the same at every input
    # size. The second point is the disc centre, which only the joint model learns; a point the
    # source does not give is NaN.
    def target(self, case, input_size, frame=None):
        frame = frame or Frame.whole(case.size)
        unknown = (math.nan, math.nan)
        points = [case.fovea or unknown, case.disc_centre or _mask_centre(case) or unknown]
        return tv_tensors.KeyPoints([[u * input_size - 0.5 for u in frame.normalised(x, y)] for x, y in points],
                                    canvas_size=(input_size, input_size), dtype=torch.float32)

    augmentations = ("standard", "classic", "mild", "atrophy", "aimed")

    def photometric(self, style="standard"):
        if style == "mild":  # a camera's tone curve, which the colour standardising cannot undo
            return [v2.RandomApply([RandomGamma((2 / 3, 1.5))], p=0.5)]
        if style == "atrophy":  # myopic eyes' pale atrophy beside the disc
            return [RandomAtrophy()]
        if style == "aimed":  # a camera aimed elsewhere; before the colours, which then see its field
            return [RandomFixation()]
        return [] if style == "classic" else camera_augmentation()

    def augmentation(self, style="standard"):
        # classic: the augmentation before the field of view (the records made then, docs/RESULTS.md);
        # mild: classic with a camera's squarer frame and (photometric) its tone curve; atrophy:
        # classic with (photometric) atrophy painted beside the disc; aimed: classic with (before
        # the colours) the field of a camera aimed elsewhere
        classic = style in ("classic", "mild", "atrophy", "aimed")
        return [*([v2.RandomApply([RandomSquareFrame()], p=0.3)] if style == "mild" else []),
                v2.RandomHorizontalFlip(),
                v2.RandomAffine(degrees=20, translate=(0.05, 0.05), scale=(0.9, 1.1) if classic else (0.8, 1.25)),
                *([v2.ColorJitter(brightness=0.2, contrast=0.2, saturation=0.1)] if classic else []),
                v2.ToDtype(torch.float32, scale=True)]

    def to_tensor(self, target):
        size = target.canvas_size[1]
        return (target.as_subclass(torch.Tensor).reshape(-1) + 0.5) / size

    def loss(self, output, target):
        output, target = output.float(), target.float()
        fovea, disc = target[:, :2], target[:, 2:]
        known = fovea.isfinite().all(1)
        loss = euclidean_loss(output[known, :2], fovea[known]) if known.any() else output.sum() * 0
        if output.shape[1] == 4:  # the joint model: the disc centre too, where it is known and in view
            known = disc.isfinite().all(1) & (disc >= 0).all(1) & (disc <= 1).all(1)
            if known.any():
                loss = loss + self.disc_weight * euclidean_loss(output[known, 2:], disc[known])
        return loss

    def metrics(self, outputs, targets):
        known = targets[:, :2].isfinite().all(1)
        d = torch.linalg.vector_norm(outputs[known, :2].float() - targets[known, :2].float(), dim=1)
        scores = {"mean_distance": float(d.mean()), "median_distance": float(d.median())} if len(d) else {}
        return {**scores, "loss": float(self.loss(outputs, targets))}

    def decode(self, output, frame):
        """The fovea in original pixels; for the joint model, turned to where the anatomy
        allows it beside its own disc centre (``anatomical``)."""
        frame, points = as_frame(frame), output.float().reshape(-1).tolist()
        fovea = frame.original(*points[:2])
        return anatomical(fovea, frame.original(*points[2:4]), frame.size) if len(points) == 4 else fovea

    def doubt(self, output):
        """The joint model's fovea closer to its own disc centre than FOVEA_DISC_GAP: one of the
        two is not where it says (on PALM's myopic eyes it takes the pale atrophy around the
        disc for the disc, and the disc for the fovea; on a disc-centred photograph it may put the
        fovea beside the disc)."""
        points = output.float().reshape(-1).tolist()
        gap = math.dist(points[:2], points[2:4]) if len(points) == 4 else math.inf
        if not gap < FOVEA_DISC_GAP:
            return None
        return (f"the fovea found {gap:.2f} of the image from the model's own disc "
                f"centre, where a fovea lies at least {FOVEA_DISC_GAP} from it: one of the two is wrong (an eye or a "
                "camera unlike those it learned from, e.g. atrophy around the disc or a disc-centred photograph); "
                "check this image")

    def view_centres(self, output):
        return [tuple(output.float().reshape(-1)[:2].tolist())]

    def disc_centre(self, output):
        points = output.float().reshape(-1)
        return tuple(points[2:4].tolist()) if len(points) == 4 else None  # the joint model's disc head

    def merge(self, first, window, box, big):
        left, top, size = box  # the window's estimates win; the first pass only aimed it
        return (window.new_tensor([left, top], dtype=torch.float32).repeat(len(window) // 2) + window.float() * size) / big

    def average(self, outputs):
        """The median position, coordinate by coordinate: of three seeds, one far off is outvoted
        (of two views, the mean). cv-fovea-disc-sources-seeds: 0.0130 out of fold against 0.0134
        for the mean position (docs/RESULTS.md)."""
        return torch.quantile(outputs.float(), 0.5, dim=0)

    def flip_back(self, output):
        points = output.float().clone()
        points[:, 0::2] = 1 - points[:, 0::2]  # x of every point; (x + 0.5) / W mirrors to 1 - that
        return points


# The fovea lies FOVEA_ANGLE (+- ANGLE_GATE) below the horizontal from the disc (anatomy.py) ...
# and about 2.5 disc diameters from it: on IDRiD's 69 markups at least 0.26 of the image
# side (squashed, as the network sees it; median 0.30). FOVEA_DISC_GAP is well inside that on any
# camera of up to about 80 degrees: a joint model's fovea closer to its own disc is doubted.
FOVEA_DISC_GAP = 0.15


def anatomical(fovea: tuple[float, float], disc: tuple[float, float], size: tuple[int, int]) -> tuple[float, float]:
    """The joint model's fovea where the line from its disc centre runs within ANGLE_GATE of
    FOVEA_ANGLE; otherwise that line turned onto FOVEA_ANGLE, its length and side kept (and
    inside the image of original ``size``).

    In original pixels, so the angle is the eye's, whatever the input's squash. The model's
    gross misses on IDRiD keep about the right distance from a disc it found well but point
    the wrong way (IDRiD_053: 38 degrees, normalised error 0.22 -> 0.02 turned); the disc is
    the photograph's surest landmark (docs/RESULTS.md)."""
    dx, dy = fovea[0] - disc[0], fovea[1] - disc[1]
    if not math.isfinite(dx + dy) or abs(math.degrees(math.atan2(dy, abs(dx))) - FOVEA_ANGLE) <= ANGLE_GATE:
        return fovea  # believed, or no disc to judge it by
    length, turn = math.hypot(dx, dy), math.radians(FOVEA_ANGLE)
    x, y = disc[0] + math.copysign(length * math.cos(turn), dx), disc[1] + length * math.sin(turn)
    return (min(max(x, 0.0), size[0] - 1.0), min(max(y, 0.0), size[1] - 1.0))


def _mask_centre(case: Case) -> tuple[float, float] | None:
    """The disc mask's centroid in original pixels (PALM ships masks, not centres)."""
    return None if case.disc_mask is None else disc_centroid(case.read_disc(), case.size)


def disc_centroid(disc: np.ndarray, size: tuple[int, int]) -> tuple[float, float] | None:
    """A disc mask's centroid in the pixels of an image of ``size`` (w, h); None for no disc."""
    if not disc.any():
        return None
    rows, cols = np.nonzero(disc)
    sx, sy = size[0] / disc.shape[1], size[1] / disc.shape[0]
    return ((cols.mean() + 0.5) * sx - 0.5, (rows.mean() + 0.5) * sy - 0.5)


def euclidean_loss(output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """The average Euclidean distance between predicted and true (normalised) positions."""
    return torch.linalg.vector_norm(output.float() - target.float(), dim=1).mean()


UNKNOWN = 255  # a disc target's label where the truth is not known: the losses and metrics skip it
# A disc's radius as a share of the field of view's diameter: 0.089-0.093 on average on the
# Drishti-GS1 and DRIONS masks; on IDRiD, 0.083-0.085 (0.06-0.11) as the disc models trained on
# those masks find it. A centre-only target is sure of its disc within CENTRE_RING[0] of it and
# of background beyond CENTRE_RING[1]: a wider unknown ring let the disc model grow its discs
# unchecked, 1.2x too large on unseen cameras (docs/RESULTS.md).
DISC_RADIUS = 0.08
# A disc is an ellipse: its mask fills nearly all of its convex hull (pixels and a vessel's notch
# aside). Set before measuring, not tuned; what it catches on PALM's myopic eyes is in RESULTS.
DISC_SOLIDITY = 0.85
CENTRE_RING = (0.5, 1.4)


class DiscTask(Task):
    name, default_arch, default_input_size, metric_name = "disc", "resnet34-aspp-unet", 512, "dice"
    archs = {"resnet34-aspp-unet": models.resnet34_aspp_unet}
    refines = True
    default_geometry, default_colour = "fov", "local"  # the local contrast: other cameras (docs/RESULTS.md)
    guide_task = FoveaTask.name  # the joint model reads the whole photograph's anatomy: a reflection does not fool it

    def usable(self, case):
        return case.disc_mask is not None or case.disc_centre is not None  # a centre: IDRiD's markups

    def scorable(self, case):
        return case.disc_mask is not None

    def target(self, case, input_size, frame=None):
        frame = frame or Frame.whole(case.size)
        if case.disc_mask is None:
            return tv_tensors.Mask(torch.from_numpy(centre_target(case.disc_centre, frame, input_size)))
        disc = torch.from_numpy(crop(case.read_disc(), frame)).to(torch.uint8)[None]
        disc = v2.functional.resize(disc, [input_size, input_size], interpolation=v2.InterpolationMode.NEAREST)
        return tv_tensors.Mask(disc[0])

    augmentations = ("standard", "classic", "wide", "atrophy")

    def photometric(self, style="standard"):
        if style == "atrophy":  # standard, with myopic eyes' pale atrophy and discs painted first
            return [RandomAtrophy(p=0.5, patches=0.5, shade=0.5), *camera_augmentation()]
        return [] if style in ("classic", "wide") else camera_augmentation()

    def augmentation(self, style="standard"):
        # classic: the augmentation before the field of view; wide: classic with larger shifts,
        # a zoom-out and stronger colour changes, the lead for other cameras then (docs/RESULTS.md)
        if style in ("standard", "atrophy"):
            return [v2.RandomHorizontalFlip(), v2.RandomVerticalFlip(),
                    v2.RandomAffine(degrees=20, scale=(0.75, 1.33), translate=(0.05, 0.05)),
                    v2.ToDtype(torch.float32, scale=True)]
        wide = style == "wide"
        return [v2.RandomHorizontalFlip(), v2.RandomVerticalFlip(),
                v2.RandomAffine(degrees=20, scale=(0.7, 1.15) if wide else (0.9, 1.1),
                                translate=(0.2, 0.2) if wide else (0.05, 0.05)),
                v2.ColorJitter(*((0.35, 0.35, 0.35, 0.05) if wide else (0.2, 0.2, 0.1, 0.02))),
                v2.ToDtype(torch.float32, scale=True)]

    def to_tensor(self, target):
        return target.as_subclass(torch.Tensor).long()

    def loss(self, output, target):
        return F.cross_entropy(output.float(), target, ignore_index=UNKNOWN) + soft_dice_loss(output, target)

    def metrics(self, outputs, targets):
        known = targets != UNKNOWN
        pred = outputs.argmax(1).bool() & known
        truth = targets == 1
        inter = (pred & truth).flatten(1).sum(1).float()
        total = pred.flatten(1).sum(1).float() + truth.flatten(1).sum(1).float()
        dice = torch.where(total > 0, 2 * inter / total.clamp(min=1), torch.ones_like(total))
        return {"dice": float(dice.mean()), "loss": float(self.loss(outputs, targets))}

    def doubt(self, output):
        """The disc found (before ``trim_lobes`` rounds it off) fills less than DISC_SOLIDITY of
        its convex hull: a disc is an ellipse, so the model has likely taken the pale atrophy of
        a myopic eye, or a patch beside the disc, for it (PALM's P photographs, docs/RESULTS.md)."""
        from .postprocess import clean_disc, solidity

        filled = solidity(clean_disc((output.float().softmax(0)[1] > 0.5).cpu().numpy()))  # only the mask's bytes cross
        if filled >= DISC_SOLIDITY:
            return None
        return (f"the disc found fills {filled:.2f} of its convex hull, where a disc, an ellipse, fills at least "
                f"{DISC_SOLIDITY}: it may be pale atrophy or a patch beside the disc (a myopic eye, or a camera "
                "unlike those it learned from); check this image")

    def decode(self, output, frame):
        from .fov import paste
        from .postprocess import clean_disc, trim_lobes

        # Clean up (one region, no holes, no lobe that no disc has) at the model's resolution,
        # where it is cheap, then push the probabilities to the kept side of 0.5: bilinear
        # upsampling then adds no region and no hole. The frame's box is resampled to whole original pixels and pasted into the image. The
        # upsampling and threshold run where the output is (the GPU): only the mask's bytes
        # cross to the host.
        frame = as_frame(frame)
        prob = output.float().softmax(0)[1]
        keep = torch.from_numpy(trim_lobes(clean_disc(prob.cpu().numpy() > 0.5))).to(prob.device)
        prob = torch.where(keep, prob.clamp(min=0.51), prob.clamp(max=0.49))
        box = (max(1, round(frame.height)), max(1, round(frame.width)))
        prob = F.interpolate(prob[None, None], size=box, mode="bilinear", align_corners=False)
        disc = (prob[0, 0] > 0.5).cpu().numpy()
        return disc if not frame.fov and disc.shape == frame.size[::-1] else paste(disc, frame)

    def flip_back(self, output):
        return output.flip(-1)

    candidates = 3  # first-pass places the refining pass looks at, at most
    candidate_floor = 0.1  # the smoothed disc probability a place needs to be one

    def view_centres(self, output):
        """The first pass's disc (its largest region), then other places where it saw a disc,
        even a faint one (regions of its smoothed probability): on an unfamiliar camera a bright
        reflection can outshine the disc in the first pass, while the refining pass, at twice
        the resolution, tells them apart (``window_score``). No disc anywhere: none."""
        from scipy import ndimage

        from .postprocess import clean_disc

        prob = output.detach().float().softmax(0)[1].cpu().numpy()
        size = prob.shape[-1]
        centres = []
        disc = clean_disc(prob > 0.5)
        if disc.any():
            rows, cols = np.nonzero(disc)
            centres.append(((cols.mean() + 0.5) / size, (rows.mean() + 0.5) / size))
        smooth = ndimage.gaussian_filter(prob, sigma=max(1.0, size / 128))
        apart = 0.15  # of the image: candidates closer than this are one place
        labels, _ = ndimage.label(smooth >= self.candidate_floor)
        places = []  # (peak, centre) of each region: the centroid of its upper half, weighted
        for label, part in enumerate(ndimage.find_objects(labels), 1):
            region = labels[part] == label
            values = np.where(region, smooth[part], 0.0)
            core = np.where(values >= values.max() / 2, values, 0.0)
            rows, cols = np.nonzero(core)
            weights = core[rows, cols]
            places.append((values.max(), ((np.average(cols, weights=weights) + part[1].start + 0.5) / size,
                                          (np.average(rows, weights=weights) + part[0].start + 0.5) / size)))
        for _, centre in sorted(places, key=lambda place: -place[0]):
            if len(centres) < self.candidates and all(math.dist(centre, c) >= apart for c in centres):
                centres.append(centre)
        return centres

    def heed(self, centres, disc):
        """The first pass's places within a disc diameter of the joint fovea model's disc centre
        ``disc``, or that centre itself where none is: its heat map reads the whole photograph's
        anatomy (where the vessels meet, where the fovea lies), so a reflection that the first
        pass took for a disc no longer wins the refining window."""
        near = [centre for centre in centres if math.dist(centre, disc) <= 2 * DISC_RADIUS]
        return near or [disc]

    def window_score(self, window):
        """How disc-like the refining pass's find is: its mean disc probability times its
        roundness (the share of the circle around its centroid, out to its farthest pixel,
        that it fills: 1 for a disc, low for the crescents that reflections at the rim of
        the field of view make); 0 where it found none."""
        from .postprocess import clean_disc

        prob = window.detach().float().softmax(0)[1].cpu().numpy()
        disc = clean_disc(prob > 0.5)
        if not disc.any():
            return 0.0
        rows, cols = np.nonzero(disc)
        reach = np.hypot(rows - rows.mean(), cols - cols.mean()).max() + 0.5
        return float(prob[disc].mean()) * min(1.0, len(rows) / (math.pi * reach**2))

    def fallback_centre(self, view):
        """The brightest disc-sized blob inside the field of view: the optic disc is the
        brightest structure of a fundus photograph, so a first pass that missed it (an
        unfamiliar camera) still gets a refining window on it. The FOV's rim, where flash
        reflections shine, is left out."""
        from scipy import ndimage

        pixels = view.float().cpu().numpy()
        size = pixels.shape[-1]
        inside = ndimage.binary_erosion(lit(pixels.max(0)), iterations=max(1, size // 24))
        if not inside.any():
            return None
        brightness = ndimage.gaussian_filter(pixels.mean(0), sigma=size / 40)
        row, col = np.unravel_index(np.where(inside, brightness, -np.inf).argmax(), inside.shape)
        return ((col + 0.5) / size, (row + 0.5) / size)

    def merge(self, first, window, box, big):
        """The window's segmentation, background elsewhere: the first pass only aimed it (its
        false regions outside the window must not outgrow the refined disc). A window that
        finds no disc leaves the first pass as it was."""
        if not (window.argmax(0) == 1).any():
            return first
        left, top, size = box
        full = window.new_zeros((2, big, big))
        full[0] = 1.0  # background, with a softmax of 0.73
        full[:, top : top + size, left : left + size] = window.float()
        return full


def centre_target(centre: tuple[float, float], frame: Frame, size: int) -> np.ndarray:
    """A disc known by its centre only (original pixels), as a (size, size) uint8 target of
    the input showing ``frame``: disc within half a typical disc radius of the centre,
    background beyond 1.4 of it, UNKNOWN between (the disc's edge is not known). Such discs
    still teach where a disc is, on every camera that has centre markups."""
    diameter = frame.width if frame.fov else max(frame.size)  # the FOV, or the whole image's side
    radius = DISC_RADIUS * diameter
    u, v = frame.normalised(*centre)
    grid = (np.arange(size) + 0.5) / size
    dx = (grid[None, :] - u) * frame.width / radius
    dy = (grid[:, None] - v) * frame.height / radius
    distance = np.hypot(dx, dy)
    target = np.full((size, size), UNKNOWN, dtype=np.uint8)
    target[distance <= CENTRE_RING[0]] = 1
    target[distance >= CENTRE_RING[1]] = 0
    return target


def soft_dice_loss(output: torch.Tensor, target: torch.Tensor, eps: float = 1.0) -> torch.Tensor:
    """1 - soft Dice of the disc class, summed over the batch (one region, as in Xie et al.);
    pixels labelled UNKNOWN count for neither side."""
    prob = output.float().softmax(1)[:, 1] * (target != UNKNOWN)
    truth = (target == 1).float()
    inter = (prob * truth).sum()
    return 1 - (2 * inter + eps) / (prob.sum() + truth.sum() + eps)


TASKS: dict[str, Task] = {t.name: t for t in (ClassificationTask(), FoveaTask(), DiscTask())}


def get_task(name: str) -> Task:
    if name not in TASKS:
        raise PalmError(f"unknown task {name!r}; choose from {', '.join(TASKS)}")
    return TASKS[name]
