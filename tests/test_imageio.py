"""Image I/O on small real files of every supported format, and the mask writers."""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk
from PIL import Image

from palm_algos.imageio import (
    IMAGE_SUFFIXES,
    ImageError,
    image_size,
    pixel_to_world,
    read_grey,
    read_image,
    write_mha_image,
    write_mha_mask,
    world_to_pixel,
    write_palm_mask,
)

W, H = 60, 40


@pytest.fixture(scope="module")
def rgb():
    yy, xx = np.mgrid[0:H, 0:W]
    return np.stack([xx * 4, yy * 6, np.full_like(xx, 100)], axis=2).astype(np.uint8)


@pytest.mark.parametrize("suffix", [".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".mha"])
def test_read_every_format_as_rgb_uint8(tmp_path, rgb, suffix):
    path = tmp_path / f"img{suffix}"
    if suffix == ".mha":
        write_mha_image(rgb, path)
    else:
        Image.fromarray(rgb).save(path, **({"quality": 98} if "jp" in suffix else {}))
    array, size = read_image(path)
    assert size == (W, H) and image_size(path) == (W, H)
    assert array.shape == (H, W, 3) and array.dtype == np.uint8
    tolerance = 12 if "jp" in suffix else 0
    assert np.abs(array.astype(int) - rgb).max() <= tolerance


def test_all_suffixes_covered():
    assert set(IMAGE_SUFFIXES) == {".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".mha"}


def test_grey_rgba_palette_inputs_normalised(tmp_path):
    grey = np.tile(np.arange(W, dtype=np.uint8) * 4, (H, 1))
    Image.fromarray(grey).save(tmp_path / "grey.png")
    array, _ = read_image(tmp_path / "grey.png")
    assert array.shape == (H, W, 3) and (array[..., 1] == grey).all()

    rgba = np.zeros((H, W, 4), np.uint8)
    rgba[..., 0], rgba[..., 3] = 200, 255
    rgba[:, : W // 2, 3] = 0  # left half transparent -> black
    Image.fromarray(rgba).save(tmp_path / "rgba.png")
    array, _ = read_image(tmp_path / "rgba.png")
    assert array.shape == (H, W, 3)
    assert tuple(array[0, -1]) == (200, 0, 0) and tuple(array[0, 0]) == (0, 0, 0)

    palette = Image.new("P", (W, H))
    palette.putpalette([0, 0, 0, 255, 128, 0] + [0] * 762)
    palette.putdata([1] * (W * H))
    palette.save(tmp_path / "palette.png")
    array, _ = read_image(tmp_path / "palette.png")
    assert tuple(array[5, 5]) == (255, 128, 0)
    assert read_grey(tmp_path / "palette.png")[5, 5] == 128  # colour averaged, not the index 1


def test_sixteen_bit_png_and_mha(tmp_path):
    values = np.array([[0, 1000], [40000, 65535]], np.uint16)
    Image.fromarray(values).save(tmp_path / "i16.png")
    assert Image.open(tmp_path / "i16.png").mode.startswith("I")
    array, size = read_image(tmp_path / "i16.png")
    assert size == (2, 2) and array.dtype == np.uint8
    assert array[..., 0].tolist() == [[0, 4], [156, 255]]

    sitk.WriteImage(sitk.GetImageFromArray(values), str(tmp_path / "i16.mha"))
    array, size = read_image(tmp_path / "i16.mha")
    assert size == (2, 2) and array[..., 2].tolist() == [[0, 4], [156, 255]]
    assert read_grey(tmp_path / "i16.mha").tolist() == [[0, 4], [156, 255]]


def test_jpeg_draft_is_smaller_but_reports_original_size(tmp_path):
    Image.fromarray(np.full((600, 900, 3), 120, np.uint8)).save(tmp_path / "big.jpg")
    array, size = read_image(tmp_path / "big.jpg", min_side=128)
    assert size == (900, 600)
    assert array.shape[:2] == (150, 225) and min(array.shape[:2]) >= 128
    array, size = read_image(tmp_path / "big.jpg", min_side=500)
    assert array.shape[:2] == (600, 900) and size == (900, 600)  # no 1/2 scale: 300 < 500
    Image.fromarray(np.full((600, 900), 50, np.uint8)).save(tmp_path / "grey.jpg")
    array, size = read_image(tmp_path / "grey.jpg", min_side=100)
    assert array.shape == (150, 225, 3) and size == (900, 600)


@pytest.mark.parametrize("suffix", [".bmp", ".png"])
def test_write_palm_mask_zero_is_disc(tmp_path, suffix):
    disc = np.zeros((H, W), bool)
    disc[10:20, 30:45] = True
    write_palm_mask(disc, tmp_path / "sub" / f"mask{suffix}")
    with Image.open(tmp_path / "sub" / f"mask{suffix}") as im:
        assert im.mode == "L" and im.size == (W, H)
        values = np.asarray(im)
    assert set(np.unique(values)) == {0, 255}
    assert ((values == 0) == disc).all()


def test_write_mha_mask_copies_reference_geometry(tmp_path, rgb):
    ref = sitk.GetImageFromArray(rgb, isVector=True)
    ref.SetOrigin((10.0, 20.0))
    ref.SetSpacing((0.5, 0.25))
    sitk.WriteImage(ref, str(tmp_path / "input.mha"))
    disc = np.zeros((H, W), bool)
    disc[5:9, 7:12] = True
    write_mha_mask(disc, tmp_path / "out" / "output.mha", reference=tmp_path / "input.mha")
    out = sitk.ReadImage(str(tmp_path / "out" / "output.mha"))
    assert out.GetPixelID() == sitk.sitkUInt8
    assert out.GetOrigin() == (10.0, 20.0) and out.GetSpacing() == (0.5, 0.25)
    values = sitk.GetArrayFromImage(out)
    assert set(np.unique(values)) == {0, 1} and ((values == 1) == disc).all()
    assert (read_grey(tmp_path / "out" / "output.mha") == np.where(disc, 255, 0)).all()  # 0/1 map


def test_pixel_to_world(tmp_path, rgb):
    ref = sitk.GetImageFromArray(rgb, isVector=True)
    ref.SetOrigin((10.0, 20.0))
    ref.SetSpacing((0.5, 0.5))
    sitk.WriteImage(ref, str(tmp_path / "input.mha"))
    assert pixel_to_world(tmp_path / "input.mha", 4, 6) == pytest.approx((12.0, 23.0))
    assert pixel_to_world(tmp_path / "photo.jpg", 4.5, 6) == (4.5, 6.0)  # no geometry: pixels


def test_pixel_and_world_round_trip_and_agree_without_geometry(tmp_path, rgb):
    """The algorithms map points out with pixel_to_world, the evaluation back with world_to_pixel:
    one geometry, read once (here a rotated, anisotropic MHA, a TIFF, and files without one)."""
    ref = sitk.GetImageFromArray(rgb, isVector=True)
    ref.SetOrigin((10.0, -20.0))
    ref.SetSpacing((0.5, 0.25))
    ref.SetDirection((0.0, -1.0, 1.0, 0.0))
    sitk.WriteImage(ref, str(tmp_path / "rotated.mha"))
    sitk.WriteImage(sitk.GetImageFromArray(rgb[..., 0]), str(tmp_path / "grey.tif"))
    (tmp_path / "not-a-tiff.tif").write_bytes((tmp_path / "rotated.mha").read_bytes()[:10])  # SimpleITK cannot tell
    for name in ("rotated.mha", "grey.tif", "not-a-tiff.tif", "photo.jpg"):
        world = pixel_to_world(tmp_path / name, 4.5, 6.25)
        assert world_to_pixel(tmp_path / name, *world) == pytest.approx((4.5, 6.25)), name
    assert pixel_to_world(tmp_path / "rotated.mha", 4, 6) == pytest.approx(ref.TransformContinuousIndexToPhysicalPoint((4, 6)))
    for name in ("not-a-tiff.tif", "photo.jpg"):  # no readable geometry: pixel space, both ways
        assert pixel_to_world(tmp_path / name, 4.5, 6.25) == world_to_pixel(tmp_path / name, 4.5, 6.25) == (4.5, 6.25)
    (tmp_path / "broken.mha").write_bytes(b"NDims = 2\nDimSize = 3\nElementDataFile = LOCAL\n")
    for mapping in (pixel_to_world, world_to_pixel):  # an unreadable header: the same refusal
        with pytest.raises(ImageError, match="broken.mha"):
            mapping(tmp_path / "broken.mha", 1.0, 2.0)


def test_truncated_jpeg(tmp_path, rgb):
    Image.fromarray(np.tile(rgb, (4, 4, 1))).save(tmp_path / "whole.jpg", quality=95)
    data = (tmp_path / "whole.jpg").read_bytes()
    (tmp_path / "half.jpg").write_bytes(data[: len(data) // 2])
    assert image_size(tmp_path / "half.jpg") == (4 * W, 4 * H)  # the header survives
    for min_side in (None, 32):
        with pytest.raises(ImageError, match=r"half\.jpg: cannot read image .*truncated"):
            read_image(tmp_path / "half.jpg", min_side=min_side)


def test_bad_files_name_the_file(tmp_path):
    (tmp_path / "notes.doc").write_bytes(b"meeting notes")  # neither its suffix nor its content an image
    (tmp_path / "junk.png").write_bytes(b"not an image")
    (tmp_path / "junk.mha").write_bytes(b"not an image")
    with pytest.raises(ImageError, match=r"notes\.doc: unsupported file type '\.doc'"):
        read_image(tmp_path / "notes.doc")
    for name in ("junk.png", "junk.mha", "missing.jpg"):
        for reader in (read_image, image_size, read_grey):
            with pytest.raises(ImageError) as info:
                reader(tmp_path / name)
            message = str(info.value)
            assert name in message and "\n" not in message
