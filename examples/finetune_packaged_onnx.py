"""Fine-tune a real pretrained network, as a PyPI package ships it, on new classes.

The OCR package ``rapidocr-onnxruntime`` carries PaddleOCR's text-direction classifier in its
wheel (``ch_ppocr_mobile_v2.0_cls_infer.onnx``: a MobileNetV3 of 0.13 M parameters trained to
tell upright text lines from upside-down ones; height and width symbolic, hard-swish written
out as Paddle writes it, its flatten computed from the input's shape at run time). This script
loads it as shipped, replaces its head with one for the bundled faces / not-faces set (scikit-image's
25x25 LFW subset, 3 channels at 48x48), fine-tunes it (the base frozen, then everything),
reports the held-out accuracy, and exports the result back to ONNX, checking that onnxruntime
runs it to cnnlab's outputs.

    pip download --no-deps rapidocr-onnxruntime==1.4.4 -d wheels
    python examples/finetune_packaged_onnx.py wheels/rapidocr_onnxruntime-1.4.4-py3-none-any.whl

(the path may also be the .onnx file itself). Needs the onnx extra; onnxruntime for the last check.
"""

import argparse
import pathlib
import tempfile
import time
import zipfile

import numpy as np

import cnnlab
import cnnlab.onnx
from cnnlab import functional as F
from cnnlab.data import load_demo_data, train_test_split

MEMBER = "rapidocr_onnxruntime/models/ch_ppocr_mobile_v2.0_cls_infer.onnx"


def network_bytes(path):
    path = pathlib.Path(path)
    if path.suffix == ".whl":
        with zipfile.ZipFile(path) as wheel:
            return wheel.read(MEMBER)
    return path.read_bytes()


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("source", help="the rapidocr-onnxruntime wheel, or the .onnx file")
    parser.add_argument("--epochs", type=int, default=10)
    args = parser.parse_args()

    base = cnnlab.onnx.load(network_bytes(args.source))
    print(f"loaded: {base}")
    x, y, names = load_demo_data("faces")
    x = F.interpolate(np.repeat(x, 3, axis=1), size=(48, 48), mode="bilinear")  # grey to 3 channels
    x_train, x_test, y_train, y_test = train_test_split(x, y, test_size=0.3, seed=0)

    for frozen in (True, False):
        model = base.copy().replace_head(len(names), seed=0)
        if frozen:
            model.freeze(up_to=len(model.layers) - 3)  # train only the new Dense head
        start = time.perf_counter()
        history = model.fit(x_train, y_train, epochs=args.epochs, batch_size=20, verbose=0, seed=0)
        accuracy = float(np.mean(model.predict(x_test) == y_test))
        print(f"{'head only' if frozen else 'all layers'}: loss {history.history['loss'][0]:.3f} -> "
              f"{history.history['loss'][-1]:.3f} in {time.perf_counter() - start:.1f} s, "
              f"held-out accuracy {accuracy:.1%} ({len(y_test)} images)")

    try:
        import onnxruntime
    except ImportError:
        return
    with tempfile.TemporaryDirectory() as folder:
        path = pathlib.Path(folder) / "faces.onnx"
        cnnlab.onnx.save(model, path)
        session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        theirs = session.run(None, {session.get_inputs()[0].name: x_test})[0]
    ours = model.graph.forward([x_test])[0]
    print(f"exported back to ONNX: onnxruntime's outputs differ from cnnlab's by at most "
          f"{np.abs(theirs - ours).max():.1e} (largest output {np.abs(ours).max():.2f})")


if __name__ == "__main__":
    main()
