"""The LAMB row of golden_layerwise.json from TF-Addons' own LAMB (optional; needs TensorFlow).

The recorded row came from a line-by-line numpy port of TF-Addons `lamb.py`; the port was not
kept. This script runs the original, `tensorflow_addons.optimizers.LAMB`, in float64 on the
§13 toy and adds the row to DIR/golden_layerwise.json (written by regenerate.py), so that
compare.py checks it. TensorFlow Addons is end of life: it needs TensorFlow 2.13-2.15 and
numpy < 2, which cannot share a venv with the `reference` extra, so it runs in its own
interpreter: `make golden GOLDEN_TF=1` builds `.venv-golden-tf` from pyproject's
`reference-tf` extra (tensorflow-cpu 2.15.1, tensorflow-addons 0.23.0).

    python tools/golden/lamb_tf_addons.py --out DIR

The trust ratios are not exposed by TF-Addons. They are recomputed from its slots as
|w| / |r| with r = m_hat / (sqrt(v_hat) + eps) + wd w (the quantity its `_resource_apply_dense`
divides by), and checked against the step TF-Addons actually took: |w_new - w| = lr tau |r|.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import sys
import warnings

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

with warnings.catch_warnings():  # its end-of-life and version notices
    warnings.simplefilter("ignore", UserWarning)
    import tensorflow_addons as tfa

LAMB_KEY = "LAMB(TF-addons port; lr=0.05, b=(0.9,0.999), eps=1e-6, wd=0.01)"
LR, B1, B2, EPS, WD = 0.05, 0.9, 0.999, 1e-6, 0.01

H1 = tf.constant([[1.0, 2.0], [3.0, 4.0]], tf.float64)
T1 = tf.constant([[0.0, 1.0], [-1.0, 0.5]], tf.float64)
H2 = tf.constant([0.5, 1.5, 2.5], tf.float64)
T2 = tf.constant([1.0, 0.0, -1.0], tf.float64)


def trajectory(steps: int = 10) -> list[dict]:
    p1 = tf.Variable([[1.0, -2.0], [0.5, 3.0]], dtype=tf.float64, name="p1")
    p2 = tf.Variable([0.3, -0.7, 1.2], dtype=tf.float64, name="p2")
    params = [p1, p2]
    # Keras' legacy optimizers keep Python-number hyperparameters as float32 variables, so a
    # float64 run with plain floats would use float32-rounded lr, betas and decay (a 1e-5
    # relative change in the trust ratios here). float64 tensors are kept as they are.
    f64 = lambda x: tf.constant(x, tf.float64)  # noqa: E731
    opt = tfa.optimizers.LAMB(
        learning_rate=f64(LR), beta_1=f64(B1), beta_2=f64(B2), epsilon=EPS, weight_decay=f64(WD)
    )
    records = []
    for k in range(1, steps + 1):
        with tf.GradientTape() as tape:
            loss = 0.5 * tf.reduce_sum(H1 * (p1 - T1) ** 2) + 0.5 * tf.reduce_sum(
                H2 * (p2 - T2) ** 2
            )
        grads = tape.gradient(loss, params)
        before = [p.numpy().copy() for p in params]
        opt.apply_gradients(zip(grads, params, strict=True))
        ratios = []
        for p, w in zip(params, before, strict=True):
            m = opt.get_slot(p, "m").numpy() / (1 - B1**k)
            v = opt.get_slot(p, "v").numpy() / (1 - B2**k)
            r = m / (np.sqrt(v) + EPS) + WD * w
            tau = np.linalg.norm(w) / np.linalg.norm(r)
            step = np.linalg.norm(p.numpy() - w)
            if not np.isclose(step, LR * tau * np.linalg.norm(r), rtol=1e-12, atol=0):
                raise AssertionError(f"step {k}: the recomputed trust ratio is not TF-Addons'")
            ratios.append(float(tau))
        records.append(
            {
                "k": k,
                "loss_before": float(loss.numpy()),
                "trust_ratios": ratios,
                "p1": p1.numpy().ravel().tolist(),
                "p2": p2.numpy().tolist(),
            }
        )
    return records


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, type=pathlib.Path)
    args = parser.parse_args(argv)
    path = args.out / "golden_layerwise.json"
    data = json.loads(path.read_text()) if path.exists() else {}
    data[LAMB_KEY] = trajectory()
    path.write_text(json.dumps(data, indent=1))
    manifest_path = args.out / "MANIFEST.json"
    if manifest_path.exists():
        manifest = json.loads(manifest_path.read_text())
        entry = manifest.setdefault("files", {}).setdefault("golden_layerwise.json", {})
        entry.get("not_regenerated", {}).pop(LAMB_KEY, None)
        entry["status"] = "partly regenerated" if entry.get("not_regenerated") else "regenerated"
        manifest.setdefault("versions", {}).update(
            {"tensorflow": tf.__version__, "tensorflow-addons": tfa.__version__}
        )
        manifest_path.write_text(json.dumps(manifest, indent=1))
    print(f"golden_layerwise.json: LAMB row from tensorflow-addons {tfa.__version__}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
