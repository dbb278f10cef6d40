"""Reading image files: every Pillow mode, EXIF orientation, GIF frames, folders, sizes, resize modes."""

import os

import numpy as np
import pytest
from PIL import Image

from cnnlab import data

RED, BLUE = (255, 0, 0), (0, 0, 255)


def two_colours(width, height, left=RED, right=BLUE):
    """An RGB image whose left half is ``left`` and right half ``right``."""
    pixels = np.zeros((height, width, 3), np.uint8)
    pixels[:, :width // 2], pixels[:, width // 2:] = left, right
    return Image.fromarray(pixels)


def save_rotated(path):
    """A 20 wide x 10 high landscape JPEG, red left and blue right, tagged 'rotate 90 degrees
    clockwise to display' (EXIF orientation 6): it shows as 10 wide x 20 high, red on top."""
    exif = Image.Exif()
    exif[0x0112] = 6
    two_colours(20, 10).save(path, quality=95, exif=exif)


def save_la(path):
    """A 6 x 4 grey+alpha PNG: the left half grey 100 and opaque, the right half transparent."""
    grey = np.full((4, 6), 100, np.uint8)
    alpha = np.zeros((4, 6), np.uint8)
    alpha[:, :3] = 255
    Image.merge("LA", (Image.fromarray(grey), Image.fromarray(alpha))).save(path)


def test_cmyk_jpeg_reads_in_its_own_colours(tmp_path):
    path = tmp_path / "red.jpg"
    Image.new("RGB", (8, 6), RED).convert("CMYK").save(path, quality=95)
    assert Image.open(path).mode == "CMYK"
    rgb = data.read_image(path, (4, 4))
    np.testing.assert_allclose(rgb[:, 2, 2], [1, 0, 0], atol=0.02)  # red, not cyan
    gray = data.read_image(path, (4, 4), color="gray")
    np.testing.assert_allclose(gray[0, 2, 2], 0.2125, atol=0.02)  # the luminance of red


def test_grey_with_alpha_is_composited_onto_white(tmp_path):
    path = tmp_path / "la.png"
    save_la(path)
    pixels = data.read_pixels(path)
    assert pixels.shape == (4, 6)
    np.testing.assert_allclose(pixels[:, 0], 100 / 255)
    np.testing.assert_allclose(pixels[:, -1], 1.0)  # transparent: white
    assert data.read_image(path, (4, 6)).shape == (3, 4, 6)
    assert data.read_image(path, (4, 6), color="gray").shape == (1, 4, 6)


@pytest.mark.parametrize("mode, value, expected, suffix", [
    ("1", 1, 1.0, "png"),
    ("L", 51, 0.2, "png"),
    ("I;16", 32768, 32768 / 65535, "png"),  # scaled by the 16-bit maximum, not clipped at 255
    ("F", 0.25, 0.25, "tiff"),
    ("F", 7.5, 1.0, "tiff"),  # float grey is taken as 0-1 and clipped
])
def test_grey_modes_give_one_plane_scaled_to_0_1(tmp_path, mode, value, expected, suffix):
    path = tmp_path / f"grey.{suffix}"
    Image.new(mode, (5, 3), value).save(path)
    pixels = data.read_pixels(path)
    assert pixels.shape == (3, 5) and pixels.dtype == np.float64
    np.testing.assert_allclose(pixels, expected)


def test_palette_and_rgba_transparency_go_onto_white(tmp_path):
    rgba = np.zeros((4, 4, 4), np.uint8)
    rgba[:, :2] = (0, 0, 255, 255)  # opaque blue; the rest is transparent black
    Image.fromarray(rgba).save(tmp_path / "rgba.png")
    pixels = data.read_pixels(tmp_path / "rgba.png")
    np.testing.assert_allclose(pixels[0, 0], [0, 0, 1])
    np.testing.assert_allclose(pixels[0, 3], [1, 1, 1])

    palette = Image.new("P", (4, 4), 1)
    palette.putpalette([0, 0, 0, 0, 255, 0] + [0] * 762)
    palette.save(tmp_path / "palette.png", transparency=0)
    np.testing.assert_allclose(data.read_pixels(tmp_path / "palette.png")[1, 1], [0, 1, 0])
    palette.save(tmp_path / "clear.png", transparency=1)
    np.testing.assert_allclose(data.read_pixels(tmp_path / "clear.png")[1, 1], [1, 1, 1])


def test_gif_reads_and_an_animation_gives_its_first_frame(tmp_path):
    Image.new("RGB", (6, 4), RED).save(tmp_path / "still.gif")
    np.testing.assert_allclose(data.read_image(tmp_path / "still.gif", (4, 6))[:, 1, 1], [1, 0, 0])
    frames = [Image.new("RGB", (6, 4), colour) for colour in (BLUE, RED)]
    frames[0].save(tmp_path / "moving.gif", save_all=True, append_images=frames[1:], duration=100)
    assert Image.open(tmp_path / "moving.gif").n_frames == 2
    np.testing.assert_allclose(data.read_image(tmp_path / "moving.gif", (4, 6))[:, 1, 1], [0, 0, 1])
    frames[0].save(tmp_path / "pages.tiff", save_all=True, append_images=frames[1:])
    assert Image.open(tmp_path / "pages.tiff").n_frames == 2
    np.testing.assert_allclose(data.read_image(tmp_path / "pages.tiff", (4, 6))[:, 1, 1], [0, 0, 1])


def test_exif_orientation_turns_the_image_upright(tmp_path):
    path = tmp_path / "phone.jpg"
    save_rotated(path)
    assert Image.open(path).size == (20, 10)  # stored landscape
    pixels = data.read_pixels(path)
    assert pixels.shape == (20, 10, 3)  # shown portrait
    np.testing.assert_allclose(pixels[2, 5], [1, 0, 0], atol=0.05)  # red on top: turned clockwise
    np.testing.assert_allclose(pixels[-3, 5], [0, 0, 1], atol=0.05)


@pytest.mark.parametrize("content", [b"not an image at all", b"\x89PNG\r\n\x1a\n garbage", None])
def test_an_undecodable_file_is_a_value_error_naming_it(tmp_path, content):
    path = tmp_path / "bad.png"
    if content is None:  # a JPEG cut short
        Image.new("RGB", (64, 64), RED).save(tmp_path / "whole.jpg")
        content = (tmp_path / "whole.jpg").read_bytes()[:200]
    path.write_bytes(content)
    with pytest.raises(ValueError, match="bad.png is not a readable image"):
        data.read_image(path, 8)
    with pytest.raises(FileNotFoundError, match="no such image"):
        data.read_image(tmp_path / "missing.png", 8)


def test_a_class_folder_of_awkward_files_loads_with_the_right_colours(tmp_path):
    awkward, plain = tmp_path / "awkward", tmp_path / "plain"
    awkward.mkdir(), plain.mkdir()
    Image.new("RGB", (8, 8), RED).convert("CMYK").save(awkward / "a_cmyk.jpg", quality=95)
    save_la(awkward / "b_la.png")
    Image.new("RGB", (8, 8), BLUE).save(awkward / "c_still.gif")
    save_rotated(awkward / "d_phone.jpg")
    Image.new("RGB", (8, 8), (0, 255, 0)).save(plain / "green.png")
    images, labels, names = data.load_image_folder(tmp_path, size=20, resize="pad")
    assert names == ["awkward", "plain"] and labels.tolist() == [0, 0, 0, 0, 1]
    assert images.shape == (5, 3, 20, 20) and images.dtype == np.float32
    cmyk, la, gif, phone, _ = images
    np.testing.assert_allclose(cmyk[:, 10, 10], [1, 0, 0], atol=0.02)
    np.testing.assert_allclose(la[:, 10, 1], 100 / 255, atol=0.01)  # opaque grey, 3 equal channels
    np.testing.assert_allclose(la[:, 10, 18], 1, atol=0.01)  # transparent: white
    np.testing.assert_allclose(gif[:, 10, 10], [0, 0, 1])
    # portrait in a square: black bars left and right, red above blue
    np.testing.assert_array_equal(phone[:, :, :4], 0)
    np.testing.assert_array_equal(phone[:, :, -4:], 0)
    np.testing.assert_allclose(phone[:, 3, 10], [1, 0, 0], atol=0.05)
    np.testing.assert_allclose(phone[:, 16, 10], [0, 0, 1], atol=0.05)
    gray, _, _ = data.load_image_folder(tmp_path, size=(6, 4), color="gray")
    assert gray.shape == (5, 1, 6, 4)


def test_class_folders_are_read_recursively_in_sorted_order_without_hidden_files(tmp_path):
    for relative, value in [("cats/b.png", 20), ("cats/a.png", 10), ("cats/indoor/z.png", 30),
                            ("cats/indoor/deeper/y.png", 40), ("cats/.hidden/x.png", 250),
                            ("cats/.thumb.png", 250), ("dogs/d.png", 60)]:
        os.makedirs(tmp_path / os.path.dirname(relative), exist_ok=True)
        Image.new("L", (4, 4), value).save(tmp_path / relative)
    os.makedirs(tmp_path / ".cache")
    Image.new("L", (4, 4), 250).save(tmp_path / ".cache" / "c.png")
    (tmp_path / "dogs" / "notes.txt").write_text("not an image")
    with pytest.warns(UserWarning, match=r"skipped 1 file\(s\) that are not readable images: .*notes.txt"):
        images, labels, names = data.load_image_folder(tmp_path, size=4, color="gray")
    assert names == ["cats", "dogs"] and labels.tolist() == [0, 0, 0, 0, 1]
    np.testing.assert_allclose(images[:, 0, 0, 0] * 255, [10, 20, 30, 40, 60], atol=1e-3)


def test_size_may_be_one_int_or_a_pair_and_bad_sizes_are_refused_by_name(tmp_path):
    path = tmp_path / "a.png"
    two_colours(6, 4).save(path)
    assert data.read_image(path, 5).shape == (3, 5, 5)
    assert data.read_image(path, (3, 7)).shape == (3, 3, 7)
    for bad, error in [(0, ValueError), ((4, -1), ValueError), ((4, 4, 4), ValueError),
                       ("32", TypeError), (2.5, TypeError), (None, TypeError)]:
        with pytest.raises(error, match="size"):
            data.read_image(path, bad)
        with pytest.raises(error, match="size"):
            data.load_image_folder(tmp_path, size=bad)


def test_resize_modes_keep_or_ignore_the_aspect_ratio(tmp_path):
    pixels = np.zeros((20, 40, 3), np.uint8)  # red | green, green | blue, in quarters across
    pixels[:, :10], pixels[:, 10:30], pixels[:, 30:] = RED, (0, 255, 0), BLUE
    path = tmp_path / "wide.png"
    Image.fromarray(pixels).save(path)

    stretched = data.read_image(path, 10)
    np.testing.assert_allclose(stretched[:, 5, 0], [1, 0, 0])  # the whole width is squeezed in
    np.testing.assert_allclose(stretched[:, 5, 9], [0, 0, 1])

    cropped = data.read_image(path, 10, resize="crop")  # the centre 20 x 20: all green
    assert cropped.shape == (3, 10, 10)
    np.testing.assert_allclose(cropped, np.broadcast_to([[[0]], [[1]], [[0]]], (3, 10, 10)), atol=1e-6)

    padded = data.read_image(path, 10, resize="pad")  # 5 x 10 in the middle rows, black around
    assert padded.shape == (3, 10, 10)
    np.testing.assert_array_equal(padded[:, :2], 0)
    np.testing.assert_array_equal(padded[:, 7:], 0)
    np.testing.assert_allclose(padded[:, 4, 0], [1, 0, 0], atol=0.05)
    np.testing.assert_allclose(padded[:, 4, 9], [0, 0, 1], atol=0.05)

    tall = data.read_image(path, (20, 5), resize="pad")  # the width limits: 2.5 rows -> 2 or 3
    assert tall.shape == (3, 20, 5) and tall[:, :8].max() == 0 and tall[:, 12:].max() == 0
    assert data.read_image(path, (20, 5), resize="crop").shape == (3, 20, 5)


def test_an_unknown_resize_mode_is_refused_by_name(tmp_path):
    (tmp_path / "a").mkdir()
    two_colours(4, 4).save(tmp_path / "a" / "x.png")
    for bad in ("fit", None, "CROP"):
        with pytest.raises(ValueError, match="resize must be 'stretch', 'crop' or 'pad', got"):
            data.read_image(tmp_path / "a" / "x.png", 4, resize=bad)
        with pytest.raises(ValueError, match="resize must be"):
            data.load_image_folder(tmp_path, size=4, resize=bad)
