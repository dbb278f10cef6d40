"""cnnlab.data.ImageFolder: a folder of class sub-folders read lazily, batch by batch, in
background threads; the same classes, files and skipping rules as load_image_folder."""

import io
import os
import threading
import warnings

import numpy as np
import pytest
from PIL import Image

from cnnlab import data
from cnnlab.prefetch import THREAD_NAME


def prefetch_threads():
    return [thread for thread in threading.enumerate() if thread.name.startswith(THREAD_NAME)]


def truncated_jpeg(path):
    """A JPEG whose header reads but whose pixels are cut short (an interrupted download)."""
    buffer = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(buffer, "JPEG")
    path.write_bytes(buffer.getvalue()[:len(buffer.getvalue()) // 2])


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    root = tmp_path_factory.mktemp("folder")
    rng = np.random.default_rng(1)
    for name, count in (("cats", 9), ("dogs", 7), ("owls", 5)):
        os.makedirs(root / name / "inner")
        for i in range(count):
            pixels = rng.integers(0, 256, (10 + i, 12, 3), dtype=np.uint8)
            where = root / name / ("inner" if i % 3 == 0 else "") / f"{i}.png"
            Image.fromarray(pixels).save(where)
    Image.new("RGB", (4, 4), "white").save(root / "cats" / ".hidden.png")
    os.makedirs(root / ".cache" / "x")
    Image.new("RGB", (4, 4), "white").save(root / ".cache" / "x" / "c.png")
    (root / "dogs" / "notes.txt").write_text("not an image")
    (root / "owls" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    return root


@pytest.fixture(scope="module")
def loaded(photos):
    with pytest.warns(UserWarning, match="skipped 2 file"):
        return data.load_image_folder(photos, size=8)


def test_the_same_classes_files_and_order_as_load_image_folder(photos, loaded):
    images, labels, names = loaded
    with pytest.warns(UserWarning) as caught:
        folder = data.ImageFolder(photos, size=8)
    assert len(caught) == 1  # one warning, naming both files
    message = str(caught[0].message)
    assert message.startswith("skipped 2 file(s) that are not readable images")
    assert "notes.txt" in message and "broken.png" in message
    assert folder.class_names == names == ["cats", "dogs", "owls"]
    assert len(folder) == len(images) == 21
    np.testing.assert_array_equal(folder.labels, labels)
    assert not any(".hidden" in file or ".cache" in file for file in folder.files)
    for i in (0, 5, 20, -1):
        image, label = folder[i]
        np.testing.assert_array_equal(image, images[i])
        assert label == labels[i] and isinstance(label, int)
    batch, batch_labels = folder.read_batch([3, 0, 17])
    np.testing.assert_array_equal(batch, images[[3, 0, 17]])
    np.testing.assert_array_equal(batch_labels, labels[[3, 0, 17]])
    assert folder.sample_shape == (3, 8, 8) and "21 images of 3 classes" in repr(folder)


def test_listing_decodes_nothing_unless_asked_to_verify(photos, monkeypatch):
    decoded = []
    real = data.read_image
    monkeypatch.setattr(data, "read_image", lambda *args, **kwargs: decoded.append(args[0]) or real(*args, **kwargs))
    with pytest.warns(UserWarning):
        data.ImageFolder(photos, size=8)
    assert decoded == []
    with pytest.warns(UserWarning):
        data.ImageFolder(photos, size=8, verify=True)
    assert len(decoded) == 23  # every file that is not hidden, once


def test_verify_skips_files_whose_pixels_cannot_be_read_with_one_warning(photos, tmp_path, loaded):
    import shutil

    root = tmp_path / "copy"
    shutil.copytree(photos, root)
    truncated_jpeg(root / "dogs" / "cut.jpg")
    with pytest.warns(UserWarning) as caught:
        listed = data.ImageFolder(root, size=8)
    assert len(caught) == 1 and "skipped 2 file" in str(caught[0].message)  # its header reads
    assert any(file.endswith("cut.jpg") for file in listed.files)
    with pytest.raises(ValueError, match="cut.jpg is not a readable image"):
        listed.read_batch(np.arange(len(listed)))
    assert prefetch_threads() == []

    with pytest.warns(UserWarning) as caught:
        verified = data.ImageFolder(root, size=8, verify=True)
    assert len(caught) == 1 and "skipped 3 file" in str(caught[0].message) and "cut.jpg" in str(caught[0].message)
    assert not any(file.endswith("cut.jpg") for file in verified.files)
    np.testing.assert_array_equal(verified.labels, loaded[1])


def test_statistics_from_every_image_a_sample_or_the_verifying_pass(photos, loaded, monkeypatch):
    images = loaded[0]
    _, mean, std = data.standardize(images)
    with pytest.warns(UserWarning):
        listed = data.ImageFolder(photos, size=8)
    with pytest.warns(UserWarning):
        verified = data.ImageFolder(photos, size=8, verify=True)
    for folder in (listed, verified):
        got_mean, got_std = folder.statistics()
        np.testing.assert_allclose(got_mean, mean, rtol=1e-12)
        np.testing.assert_allclose(got_std, std, rtol=1e-12)
    chosen = np.sort(np.random.default_rng(5).choice(len(images), 6, replace=False))
    _, sample_mean, sample_std = data.standardize(images[chosen])
    np.testing.assert_allclose(listed.statistics(sample=6, seed=5), (sample_mean, sample_std), rtol=1e-12)
    part = verified.subset([1, 4, 9, 20])  # a subset's statistics are its images'
    _, part_mean, part_std = data.standardize(images[[1, 4, 9, 20]])
    np.testing.assert_allclose(part.statistics(), (part_mean, part_std), rtol=1e-12)
    monkeypatch.setattr(data, "read_image", None)  # after verifying, no image is read again
    verified.statistics()
    with pytest.raises(ValueError, match="sample must be >= 1, got 0"):
        listed.statistics(sample=0)


def test_standardization_augmentation_and_subsets(photos, loaded):
    images, labels, _ = loaded
    mean, std = np.array([0.5, 0.4, 0.3]), np.array([0.2, 0.25, 0.3])
    with pytest.warns(UserWarning):
        folder = data.ImageFolder(photos, size=8, mean=mean, std=std, augment=data.Augmenter(flip=False))
    expected = data.standardize(images, mean, std)[0]
    np.testing.assert_allclose(folder[4][0], expected[4], rtol=1e-6)  # an item is never augmented
    plain, _ = folder.read_batch([2, 7], augment=False)
    np.testing.assert_allclose(plain, expected[[2, 7]], rtol=1e-6)
    augmented, _ = folder.read_batch([2, 7], np.random.default_rng(3))
    by_hand = data.Augmenter(flip=False)(images[[2, 7]], np.random.default_rng(3))  # on [0, 1], then standardized
    np.testing.assert_allclose(augmented, data.standardize(by_hand, mean, std)[0], rtol=1e-5, atol=1e-6)

    part = folder.subset([20, 0])
    assert len(part) == 2 and part.files == [folder.files[20], folder.files[0]]
    np.testing.assert_array_equal(part.labels, labels[[20, 0]])
    np.testing.assert_allclose(part.read_batch([0, 1], augment=False)[0], expected[[20, 0]], rtol=1e-6)
    assert part.augment is folder.augment and len(folder) == 21  # the original is untouched

    folder.mean, folder.std = None, None
    np.testing.assert_array_equal(folder[4][0], images[4])
    with pytest.raises(ValueError, match=r"mean must hold one value per channel \(3\), got 2"):
        folder.mean = [0.5, 0.5]


def test_batches_are_read_ahead_in_threads_and_the_threads_end(photos, loaded):
    images, labels, _ = loaded
    with pytest.warns(UserWarning):
        folder = data.ImageFolder(photos, size=8)
    seen = [(x, y) for x, y in folder.batches(batch_size=4)]
    assert [len(y) for _, y in seen] == [4, 4, 4, 4, 4, 1]
    np.testing.assert_array_equal(np.concatenate([x for x, _ in seen]), images)
    first = np.concatenate([y for _, y in folder.batches(4, shuffle=True, seed=2)])
    again = np.concatenate([y for _, y in folder.batches(4, shuffle=True, seed=2)])
    np.testing.assert_array_equal(first, again)
    assert sorted(first) == sorted(labels) and not np.array_equal(first, labels)
    assert prefetch_threads() == []

    for _ in folder.batches(2, threads=2, ahead=3):
        break
    assert prefetch_threads() == []
    with folder.batches(2) as batches:
        next(batches)
    assert prefetch_threads() == []


def test_a_file_removed_after_listing_stops_the_batches_with_its_name(photos, tmp_path):
    import shutil

    root = tmp_path / "copy"
    shutil.copytree(photos, root)
    with pytest.warns(UserWarning):
        folder = data.ImageFolder(root, size=8)
    os.remove(folder.files[9])
    with pytest.raises(FileNotFoundError, match="no such image"):
        for _ in folder.batches(batch_size=2):
            pass
    assert prefetch_threads() == []


def test_folder_errors_are_those_of_load_image_folder(tmp_path):
    with pytest.raises(FileNotFoundError, match="no such folder"):
        data.ImageFolder(tmp_path / "missing")
    with pytest.raises(ValueError, match="no readable images"):
        data.ImageFolder(tmp_path)
    os.makedirs(tmp_path / "only")
    Image.new("L", (4, 4)).save(tmp_path / "only" / "a.png")
    with pytest.raises(ValueError, match="single class"):
        data.ImageFolder(tmp_path)
    os.makedirs(tmp_path / "other")
    Image.new("L", (4, 4)).save(tmp_path / "other" / "b.png")
    for arguments, error, message in [(dict(size=0), ValueError, "size"), (dict(color="cmyk"), ValueError, "color"),
                                      (dict(resize="fit"), ValueError, "resize"),
                                      (dict(augment="yes"), TypeError, "augment"),
                                      (dict(verify="yes"), TypeError, "verify"),
                                      (dict(std=[1, 2]), ValueError, "std must hold one value per channel")]:
        with pytest.raises(error, match=message):
            data.ImageFolder(tmp_path, **arguments)
    folder = data.ImageFolder(tmp_path, size=4, color="gray")
    assert folder[1][0].shape == (1, 4, 4)
    with pytest.raises(IndexError, match="out of range"):
        folder[2]
    with pytest.raises(TypeError, match="integer"):
        folder["a"]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # nothing skipped: no warning
        data.ImageFolder(tmp_path, size=4, verify=True)
