"""Model files: the mode of saved files, and clear errors for files that are not cnnlab models."""

import os
import stat

import numpy as np
import pytest

import cnnlab
from cnnlab import layers as L


def tiny_model():
    return cnnlab.Sequential([L.Flatten(), L.Dense(4, 2, seed=0)], input_shape=(1, 2, 2))


@pytest.fixture
def umask():
    """Set the process umask for one test, then put the old one back."""
    previous = os.umask(0o022)
    yield os.umask
    os.umask(previous)


def mode(path):
    return stat.S_IMODE(os.stat(path).st_mode)


def test_a_new_file_gets_the_usual_mode_for_new_files(tmp_path, umask):
    tiny_model().save(tmp_path / "model.npz")
    assert mode(tmp_path / "model.npz") == 0o644
    umask(0o077)
    tiny_model().save(tmp_path / "private.npz")
    assert mode(tmp_path / "private.npz") == 0o600


def test_an_overwrite_keeps_the_existing_mode(tmp_path, umask):
    path = tmp_path / "model.npz"
    tiny_model().save(path)
    os.chmod(path, 0o640)
    tiny_model().save(path)
    assert mode(path) == 0o640
    assert cnnlab.load(path).predict(np.ones((1, 1, 2, 2), np.float32)).shape == (1,)


def assert_refused(path, *words):
    with pytest.raises(ValueError) as error:
        cnnlab.load(path)
    message = str(error.value)
    for word in words:
        assert word in message
    assert "pickle" not in message  # never point anyone at unsafe loading
    return message


def test_a_truncated_model_file(tmp_path):
    path = tmp_path / "model.npz"
    tiny_model().save(path)
    data = path.read_bytes()
    path.write_bytes(data[:len(data) // 2])
    assert_refused(path, "not a cnnlab model file", "truncated")


def test_an_hdf5_file(tmp_path):
    path = tmp_path / "keras.h5"
    path.write_bytes(b"\x89HDF\r\n\x1a\n" + bytes(200))
    assert_refused(path, "not a cnnlab model file", "HDF5")


def test_a_text_file(tmp_path):
    path = tmp_path / "notes.npz"
    path.write_text("weights: 1 2 3\n")
    assert_refused(path, "not a cnnlab model file", "not a .npz archive")


def test_an_npz_with_object_arrays(tmp_path):
    path = tmp_path / "objects.npz"
    np.savez(path, settings=np.array([{"lr": 0.1}], dtype=object))
    assert_refused(path, "not a cnnlab model file")
    marked = tmp_path / "marked.npz"
    np.savez(marked, cnnlab_format=np.array("cnnlab-model-1"), settings=np.array([{"lr": 0.1}], dtype=object))
    assert_refused(marked, "not a cnnlab model file")


def test_a_file_from_a_newer_cnnlab(tmp_path):
    path = tmp_path / "model.npz"
    tiny_model().save(path)
    with np.load(path, allow_pickle=False) as archive:
        arrays = dict(archive)
    arrays.update(cnnlab_format=np.array("cnnlab-model-2"), cnnlab_version=np.array("9.1.0"))
    np.savez(path, **arrays)
    assert_refused(path, "written by a newer cnnlab (version 9.1.0", "upgrade cnnlab")
    arrays.update(cnnlab_format=np.array("other-format"))
    np.savez(path, **arrays)
    assert_refused(path, "not a cnnlab model file", "'other-format'")


def test_todays_files_still_load(tmp_path):
    model = tiny_model()
    path = tmp_path / "model.npz"
    np.savez(path, cnnlab_format=np.array("cnnlab-model-1"), cnnlab_version=np.array("0.1.0"),
             architecture=np.array('{"layers": [{"type": "Flatten", "config": {}, "trainable": true}, '
                                   '{"type": "Dense", "config": {"in_features": 4, "out_features": 2}, '
                                   '"trainable": true}], "input_shape": [1, 2, 2], "class_names": null}'),
             **{"param/1/weight": model.layers[1].weight, "param/1/bias": model.layers[1].bias})
    loaded = cnnlab.load(path)
    np.testing.assert_array_equal(loaded.layers[1].weight, model.layers[1].weight)
