"""Send one study to a fracturescan REST API and print the result (Python standard library only).

    FRACTURESCAN_API_KEY=fsk_... python examples/api_client.py http://127.0.0.1:8000 study_dir/ --heatmaps out/

Every PNG, JPEG and DICOM file in the folder (or the files given) is one view of the study. With
``--heatmaps DIR`` the overlays are saved there as PNG files. Exit code 0 on success, 1 when the
server refused the request (its one-line reason is printed).
"""

from __future__ import annotations

import argparse
import base64
import json
import mimetypes
import os
import sys
import urllib.error
import urllib.parse
import urllib.request
import uuid
from pathlib import Path

SUFFIXES = {".png", ".jpg", ".jpeg", ".dcm", ".dicom"}


def study_files(paths: list[Path]) -> list[Path]:
    """The image files among ``paths`` (folders are listed, sorted)."""
    files: list[Path] = []
    for path in paths:
        files += sorted(p for p in path.iterdir() if p.suffix.lower() in SUFFIXES) if path.is_dir() else [path]
    return files


def multipart(files: list[Path]) -> tuple[bytes, str]:
    """A multipart/form-data body with every file under the field name ``files``."""
    boundary = uuid.uuid4().hex
    body = bytearray()
    for path in files:
        kind = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
        body += (f"--{boundary}\r\nContent-Disposition: form-data; name=\"files\"; filename=\"{path.name}\"\r\n"
                 f"Content-Type: {kind}\r\n\r\n").encode() + path.read_bytes() + b"\r\n"
    body += f"--{boundary}--\r\n".encode()
    return bytes(body), f"multipart/form-data; boundary={boundary}"


def predict(server: str, key: str, files: list[Path], heatmaps: bool, body_part: str | None = None) -> dict:
    """POST the study to ``/v1/predict``; the parsed JSON answer (raises HTTPError on refusal).

    ``body_part`` (e.g. ``wrist``) picks the model for that body part; without it the server
    reads the DICOM BodyPartExamined, else uses its default model."""
    body, content_type = multipart(files)
    query = urllib.parse.urlencode({"heatmaps": str(heatmaps).lower(), **({"body_part": body_part} if body_part else {})})
    request = urllib.request.Request(f"{server.rstrip('/')}/v1/predict?{query}",
                                     data=body, method="POST",
                                     headers={"Authorization": f"Bearer {key}", "Content-Type": content_type})
    with urllib.request.urlopen(request, timeout=300) as response:
        return json.load(response)


def main() -> int:
    """Parse the arguments, send the study, print the result."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("server", help="e.g. http://127.0.0.1:8000")
    parser.add_argument("paths", nargs="+", type=Path, help="a study folder or image files")
    parser.add_argument("--heatmaps", type=Path, help="save heatmap overlays (PNG) into this folder")
    parser.add_argument("--body-part", help="body part of the study (e.g. wrist, XR_FINGER): routes it to that "
                                            "part's model; default: the DICOM header, else the server's default model")
    args = parser.parse_args()
    key = os.environ.get("FRACTURESCAN_API_KEY")
    if not key:
        print("error: set FRACTURESCAN_API_KEY to your API key", file=sys.stderr)
        return 1
    files = study_files(args.paths)
    if not files:
        print("error: no PNG, JPEG or DICOM file found", file=sys.stderr)
        return 1
    try:
        result = predict(args.server, key, files, heatmaps=args.heatmaps is not None, body_part=args.body_part)
    except urllib.error.HTTPError as exc:
        print(f"error: {exc.code}: {json.load(exc).get('error', exc.reason)}", file=sys.stderr)
        return 1
    for warning in result["warnings"]:
        print(f"WARNING: {warning}")
    for image in result["images"]:
        verdict = image["error"] or f"P(abnormal) = {image['probability']:.3f}" + (" ABNORMAL" if image["abnormal"] else "")
        print(f"{image['name']}: {verdict}")
        if args.heatmaps is not None and image["heatmap_png"]:
            args.heatmaps.mkdir(parents=True, exist_ok=True)
            (args.heatmaps / f"{Path(image['name']).stem}_heatmap.png").write_bytes(base64.b64decode(image["heatmap_png"]))
    study = result["study"]
    if result.get("body_part"):
        print(f"body part: {result['body_part']} (model {result['model_id']}, chosen by {result['body_part_source']})")
    print(f"study: P(abnormal) = {study['probability']:.3f} at threshold {result['threshold']:.3f} -> "
          f"{'ABNORMAL' if study['abnormal'] else 'normal'} (audit #{result['audit_id']})")
    if result.get("heatmap_caption"):
        print(result["heatmap_caption"])
    print(result["disclaimer"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
