"""A small Keras 3 CNN exported to ONNX by Keras itself (``model.export(format="onnx")``), with
onnxruntime's outputs beside it, for ``bench/timm_zoo.py --check``.

    pip install keras torch onnx onnxruntime onnxscript
    KERAS_BACKEND=torch python bench/keras_onnx.py OUT/keras
    pip install keras tensorflow-cpu tf2onnx onnxruntime       # in another environment
    KERAS_BACKEND=tensorflow python bench/keras_onnx.py OUT/keras
    python bench/timm_zoo.py --check OUT            # with cnnlab: checks the Keras files too

With the torch backend Keras exports through torch.onnx.export and cannot export a symbolic
height and width (it traces with every unknown size set to 1); with tensorflow it uses tf2onnx.

Writes, with random weights and BatchNormalization statistics set to random values (variances
positive), three files named ``MODEL__keras-BACKEND__DIMS.onnx``: ``keras_cnn_nhwc`` (Keras's
default channels-last layout) at a fixed 32x32 and at any height and width (``Input((None,
None, 3))``), and ``keras_cnn_nchw`` (``channels_first``) at 32x32. Beside each, the .npz holds
the cases ``b1_x`` (batch 1) and ``b2_x`` (batch 2; 64x96 for the any-size file) and
onnxruntime's outputs ``b1_y0``, ``b2_y0``, as bench/timm_zoo.py writes them.
"""

import json
import os
import pathlib
import re
import sys

import numpy as np

os.environ.setdefault("KERAS_BACKEND", "torch")

import keras  # noqa: E402


def build(data_format, size):
    keras.config.set_image_data_format(data_format)
    keras.utils.set_random_seed(0)
    shape = (size, size, 3) if data_format == "channels_last" else (3, size, size)
    if size is None:
        shape = (None, None, 3) if data_format == "channels_last" else (3, None, None)
    inputs = keras.Input(shape)
    x = keras.layers.Conv2D(16, 3, padding="same", use_bias=False)(inputs)
    x = keras.layers.BatchNormalization()(x)
    x = keras.layers.ReLU()(x)
    x = keras.layers.MaxPooling2D(2)(x)
    x = keras.layers.DepthwiseConv2D(3, padding="same")(x)
    x = keras.layers.SeparableConv2D(32, 3, padding="same", activation="swish")(x)
    x = keras.layers.BatchNormalization()(x)
    y = keras.layers.Conv2D(32, 3, strides=2, padding="same", activation="relu")(x)
    y = keras.layers.AveragePooling2D(2, padding="same")(y)
    y = keras.layers.Conv2D(32, 1, activation="hard_swish")(y)
    y = keras.layers.GlobalAveragePooling2D()(y)
    y = keras.layers.Dropout(0.3)(y)
    outputs = keras.layers.Dense(10, activation="softmax")(y)
    model = keras.Model(inputs, outputs)
    rng = np.random.default_rng(0)
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            channels = layer.moving_mean.shape[0]
            layer.moving_mean.assign(rng.normal(0, 0.2, channels).astype("float32"))
            layer.moving_variance.assign(rng.uniform(0.5, 1.5, channels).astype("float32"))
            layer.gamma.assign(rng.uniform(0.5, 1.5, channels).astype("float32"))
            layer.beta.assign(rng.normal(0, 0.2, channels).astype("float32"))
    return model


def main():
    import onnx
    import onnxruntime as ort

    folder = pathlib.Path(sys.argv[1] if len(sys.argv) > 1 else "keras_onnx")
    folder.mkdir(parents=True, exist_ok=True)
    backend = keras.config.backend()
    manifest_path = folder / "manifest.json"
    manifest = json.loads(manifest_path.read_text()) if manifest_path.exists() else {}
    rng = np.random.default_rng(0)
    for name, data_format, size in [("keras_cnn_nhwc", "channels_last", 32), ("keras_cnn_nhwc", "channels_last", None),
                                    ("keras_cnn_nchw", "channels_first", 32)]:
        dims = "fixed" if size else "dynamic"
        path = folder / f"{name}__keras-{backend}__{dims}.onnx"
        record = {"file": path.name, "model": name, "exporter": f"keras {keras.__version__} ({backend})",
                  "dims": dims}
        manifest[path.name] = record
        model = build(data_format, size)
        model.predict(np.zeros((1, 32, 32, 3) if data_format == "channels_last" else (1, 3, 32, 32), "float32"),
                      verbose=0)  # Keras exports only a model that has been called
        try:
            model.export(str(path), format="onnx")
        except Exception as exc:
            message = " ".join(re.sub(r"\x1b\[[0-9;]*m", "", str(exc)).split())
            record["export_error"] = f"{type(exc).__name__}: {message[:400]}"
            print(record["export_error"], file=sys.stderr)
            continue
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        first = session.get_inputs()[0]
        cases = {}
        for case, (batch, h, w) in {"b1": (1, 32, 32), "b2": (2, 32, 32) if size else (2, 64, 96)}.items():
            shape = (batch, h, w, 3) if data_format == "channels_last" else (batch, 3, h, w)
            cases[case] = rng.standard_normal(shape).astype(np.float32)
        arrays = {}
        for case, x in cases.items():
            expected = model.predict(x, verbose=0)
            arrays[f"{case}_x"] = x
            for i, y in enumerate(session.run(None, {first.name: x})):
                arrays[f"{case}_y{i}"] = y
                record.setdefault("keras_vs_onnxruntime", {})[case] = float(np.abs(y - expected).max())
        np.savez(path.with_suffix(".npz"), **arrays)
        record["opset"] = onnx.load(str(path)).opset_import[0].version
        record["input"] = [d.dim_value or d.dim_param for d in onnx.load(str(path)).graph.input[0].type.tensor_type
                           .shape.dim]
        print(json.dumps(record), file=sys.stderr)
    manifest_path.write_text(json.dumps(manifest, indent=1))


if __name__ == "__main__":
    main()
