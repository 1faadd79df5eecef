"""Images that are NOT wrist radiographs, for measuring the input guard.

Each family returns float images in [0, 1] (2-D, various sizes), as :func:`read_image` would.
Every family is drawn from a seed, so the measurement is reproducible; the guard never saw any of
them when it was fitted.
"""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw, ImageFilter, ImageFont


def _to_float(image: Image.Image) -> np.ndarray:
    return np.asarray(image.convert("L"), dtype=np.float32) / 255.0


def natural_photos(n: int, seed: int = 0) -> list[np.ndarray]:
    """Crops, flips and rescalings of scikit-image's sample photographs (grey, as the reader makes them)."""
    from skimage import data

    names = ["astronaut", "camera", "coffee", "chelsea", "rocket", "cat", "coins", "moon", "page",
             "horse", "hubble_deep_field", "immunohistochemistry", "cell", "retina",
             "grass", "gravel", "brick", "colorwheel", "logo", "text", "clock"]
    photos = []
    for name in names:  # all shipped inside the scikit-image wheel: nothing is downloaded
        img = np.asarray(getattr(data, name)()).astype(np.float32)
        if img.ndim == 3:
            img = img[..., :3].mean(axis=2)
        photos.append((img - img.min()) / max(float(np.ptp(img)), 1e-6))
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        img = photos[i % len(photos)]
        h, w = img.shape
        ch, cw = int(h * rng.uniform(0.5, 1.0)), int(w * rng.uniform(0.5, 1.0))
        y, x = rng.integers(0, h - ch + 1), rng.integers(0, w - cw + 1)
        crop = img[y:y + ch, x:x + cw]
        out.append(crop[:, ::-1] if rng.random() < 0.5 else crop)
    return out


def documents(n: int, seed: int = 0) -> list[np.ndarray]:
    """Rendered text pages: dark lines of words on light paper, some with a table or heading."""
    rng = np.random.default_rng(seed)
    font = ImageFont.load_default()
    words = ["patient", "report", "fracture", "radius", "distal", "findings", "no", "acute", "the",
             "impression", "wrist", "views", "normal", "alignment", "soft", "tissue", "date", "signed"]
    out = []
    for _ in range(n):
        w, h = int(rng.integers(300, 600)), int(rng.integers(400, 800))
        page = Image.new("L", (w, h), int(rng.integers(215, 256)))
        draw = ImageDraw.Draw(page)
        y = int(rng.integers(10, 40))
        while y < h - 20:
            line = " ".join(rng.choice(words, size=int(rng.integers(3, 12))))
            draw.text((int(rng.integers(10, 40)), y), line, fill=int(rng.integers(0, 60)), font=font)
            y += int(rng.integers(12, 24))
        if rng.random() < 0.4:
            x0, y0 = 20, int(h * 0.6)
            for k in range(5):
                draw.line((x0, y0 + 18 * k, w - 20, y0 + 18 * k), fill=40)
        out.append(_to_float(page))
    return out


def noise(n: int, seed: int = 0) -> list[np.ndarray]:
    """Uniform, Gaussian and salt-and-pepper noise at random sizes."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        shape = (int(rng.integers(64, 300)), int(rng.integers(64, 300)))
        kind = i % 3
        if kind == 0:
            img = rng.random(shape)
        elif kind == 1:
            img = np.clip(rng.normal(rng.uniform(0.3, 0.7), rng.uniform(0.1, 0.3), shape), 0, 1)
        else:
            img = (rng.random(shape) < rng.uniform(0.2, 0.8)).astype(np.float64)
        out.append(img.astype(np.float32))
    return out


def inverted(images: list[np.ndarray]) -> list[np.ndarray]:
    """Negatives of in-distribution images (MONOCHROME1 shown without inversion, or a negative export)."""
    return [1.0 - img for img in images]


def _blurred(canvas: Image.Image, rng: np.random.Generator) -> np.ndarray:
    img = _to_float(canvas.filter(ImageFilter.GaussianBlur(float(rng.uniform(1.0, 2.5)))))
    return np.clip(img + rng.normal(0, 0.03, img.shape), 0, 1).astype(np.float32)


def chest_phantoms(n: int, seed: int = 0) -> list[np.ndarray]:
    """Frontal chest-like radiographs: a bright trunk, two dark lungs crossed by rib arcs, a spine,
    clavicles and a heart shadow."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        s = int(rng.integers(200, 320))
        img = Image.new("L", (s, s), int(rng.integers(0, 30)))
        d = ImageDraw.Draw(img)
        d.ellipse((0.05 * s, 0.05 * s, 0.95 * s, 1.2 * s), fill=int(rng.integers(150, 190)))
        for side in (0, 1):
            x0 = 0.15 * s if side == 0 else 0.55 * s
            d.ellipse((x0, 0.18 * s, x0 + 0.3 * s, 0.85 * s), fill=int(rng.integers(40, 80)))
        d.rectangle((0.47 * s, 0.05 * s, 0.53 * s, s), fill=int(rng.integers(200, 235)))
        for k in range(9):
            y = (0.2 + 0.075 * k) * s
            for side in (-1, 1):
                d.arc((0.5 * s + side * 0.02 * s - 0.35 * s, y - 0.05 * s, 0.5 * s + side * 0.02 * s + 0.35 * s,
                       y + 0.12 * s), 180 if side < 0 else 270, 270 if side < 0 else 360, fill=210, width=3)
        d.line((0.15 * s, 0.15 * s, 0.45 * s, 0.2 * s), fill=225, width=5)
        d.line((0.55 * s, 0.2 * s, 0.85 * s, 0.15 * s), fill=225, width=5)
        d.ellipse((0.42 * s, 0.5 * s, 0.72 * s, 0.85 * s), fill=int(rng.integers(150, 180)))
        out.append(_blurred(img, rng))
    return out


def other_anatomy(n: int, seed: int = 0) -> list[np.ndarray]:
    """Skull, pelvis and knee-like radiographs (bones that are not a wrist)."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        s = int(rng.integers(200, 320))
        img = Image.new("L", (s, s), int(rng.integers(0, 30)))
        d = ImageDraw.Draw(img)
        kind = i % 3
        if kind == 0:  # skull: a thick bright vault around grey brain, orbits and jaw
            d.ellipse((0.12 * s, 0.05 * s, 0.88 * s, 0.85 * s), fill=225)
            d.ellipse((0.18 * s, 0.11 * s, 0.82 * s, 0.79 * s), fill=int(rng.integers(90, 130)))
            for x in (0.28, 0.55):
                d.ellipse((x * s, 0.5 * s, (x + 0.17) * s, 0.64 * s), fill=50)
            d.arc((0.25 * s, 0.6 * s, 0.75 * s, 0.98 * s), 0, 180, fill=215, width=10)
        elif kind == 1:  # pelvis: iliac wings, sacrum, two femoral heads
            d.ellipse((0.05 * s, 0.1 * s, 0.45 * s, 0.55 * s), fill=200)
            d.ellipse((0.55 * s, 0.1 * s, 0.95 * s, 0.55 * s), fill=200)
            d.polygon([(0.4 * s, 0.2 * s), (0.6 * s, 0.2 * s), (0.5 * s, 0.6 * s)], fill=215)
            d.ellipse((0.3 * s, 0.55 * s, 0.7 * s, 0.8 * s), outline=210, width=9)
            for x in (0.12, 0.72):
                d.ellipse((x * s, 0.55 * s, (x + 0.16) * s, 0.71 * s), fill=230)
                d.rectangle(((x + 0.03) * s, 0.68 * s, (x + 0.12) * s, s), fill=220)
        else:  # knee: wide femoral condyles over a tibial plateau, a patella, thick soft tissue
            d.rectangle((0.2 * s, 0, 0.8 * s, s), fill=int(rng.integers(80, 110)))
            d.rectangle((0.38 * s, 0, 0.62 * s, 0.4 * s), fill=215)
            d.ellipse((0.28 * s, 0.3 * s, 0.72 * s, 0.52 * s), fill=225)
            d.rectangle((0.3 * s, 0.55 * s, 0.7 * s, 0.62 * s), fill=225)
            d.rectangle((0.38 * s, 0.6 * s, 0.6 * s, s), fill=215)
            d.ellipse((0.62 * s, 0.25 * s, 0.78 * s, 0.45 * s), fill=230)
        out.append(_blurred(img, rng))
    return out


def labelled_site(root, labels: list[int], images_per_study: int = 2, seed: int = 0):
    """A site's labelled studies as a CSV data set (one study and patient per label): small
    noisy gradient PNGs whose brightness follows the label. Returns the CSV's path."""
    from pathlib import Path

    rng = np.random.default_rng(seed)
    root = Path(root)
    rows = ["path,label,study_id,patient_id"]
    ramp = np.add.outer(np.arange(40), np.arange(36)) * 2.0
    for i, label in enumerate(labels):
        for j in range(images_per_study):
            pixels = ramp + 60 + 80 * label + rng.normal(0, 12, ramp.shape) + rng.uniform(-20, 20)
            path = root / f"s{i}" / f"v{j}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8), mode="L").save(path)
            rows.append(f"{path},{label},s{i},p{i}")
    (root / "site.csv").write_text("\n".join(rows) + "\n")
    return root / "site.csv"
