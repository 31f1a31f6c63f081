"""The report page: what mining kept and dropped, per video, readable without opening a tar.

One self-contained HTML file written beside manifest.json: images are inlined as data URIs, drawings
are inline SVG, and there is no JavaScript, so it opens from disk or from any static file server. A
Content-Security-Policy forbids scripts and remote loads anyway, because ids, URLs and reasons come from
the internet; every text is escaped as well.
"""
import base64
import html
from urllib.parse import urlsplit

import cv2
import numpy as np

STATUS_COLOURS = {"ok": "#2e7d32", "partial": "#9e6a00", "empty": "#607d8b", "failed": "#c62828",
                  "duplicate": "#6a1b9a", "skipped": "#455a64"}
LABEL_COLOURS = {"kept": "#43a047", "static": "#9e9e9e", "duplicate": "#8e24aa", "flash": "#fdd835",
                 "cut": "#e53935", "short_run": "#fb8c00", "overlay_only": "#1e88e5"}
"""Time line colours; each label is a reason a stretch of decoded frames was kept or dropped."""
CROP_COLOUR = "#00e676"
REGION_COLOUR = "#ff9100"

_STYLE = """
body{font:14px/1.45 system-ui,sans-serif;margin:24px auto;max-width:1100px;padding:0 16px;color:#222;
background:#fafafa}
h1{font-size:22px;margin:0 0 12px}h2{font-size:17px;margin:0;word-break:break-all}
table{border-collapse:collapse;margin:0 0 20px;background:#fff}
td,th{border:1px solid #ddd;padding:4px 10px;text-align:left;vertical-align:top}th{background:#f0f0f0}
section{background:#fff;border:1px solid #ddd;border-radius:6px;padding:14px 16px;margin:0 0 16px}
.head{display:flex;gap:10px;align-items:center;flex-wrap:wrap}
.badge{color:#fff;border-radius:10px;padding:1px 10px;font-size:12px;font-weight:600}
.muted{color:#666}.src{word-break:break-all}
.thumbs{display:flex;gap:4px;flex-wrap:wrap;margin:8px 0}.thumbs img{display:block;border-radius:2px}
.bar{display:block;width:100%;height:18px;border:1px solid #ccc;margin:8px 0 4px}
.legend span{display:inline-block;margin-right:12px;font-size:12px}
.sw{display:inline-block;width:10px;height:10px;margin-right:4px;vertical-align:middle}
.preview{display:block;max-width:100%;height:auto;margin-top:8px}
"""
_CSP = "default-src 'none'; img-src data:; style-src 'unsafe-inline'"


def _esc(value) -> str:
    return html.escape(str(value), quote=True)


def _jpeg_uri(jpeg: bytes) -> str:
    return "data:image/jpeg;base64," + base64.b64encode(jpeg).decode("ascii")


def _swatch(colour: str, text: str) -> str:
    return f'<span><i class="sw" style="background:{colour}"></i>{_esc(text)}</span>'


def _totals_table(totals: dict) -> str:
    rows = [("videos", totals["videos"]), ("videos with samples", totals["videos_with_samples"]),
            ("samples", totals["samples"]), ("source minutes", f"{totals['source_minutes']:.1f}"),
            ("samples per minute", f"{totals['samples_per_minute']:.1f}"),
            ("frames kept / decoded", f"{totals['frames_kept']} / {totals['frames_decoded']}"),
            ("videos by status", ", ".join(f"{k}: {v}" for k, v in totals["by_status"].items()) or "none"),
            ("frames dropped", ", ".join(f"{k}: {v}" for k, v in totals["dropped"].items()) or "none")]
    return "<table>" + "".join(f"<tr><th>{_esc(k)}</th><td>{_esc(v)}</td></tr>" for k, v in rows) + "</table>"


def _source_link(url: str) -> str:
    """A link only for http(s): a `javascript:` URL from a list must not become clickable."""
    if urlsplit(url).scheme in ("http", "https"):
        return f'<a class="src" href="{_esc(url)}" rel="noreferrer">{_esc(url)}</a>'
    return f'<span class="src">{_esc(url) or "no source"}</span>'


def _yield_line(video: dict) -> str:
    minutes = video["duration_s"] / 60.0
    per_minute = f"{video['samples'] / minutes:.1f}" if minutes > 0 else "–"
    return (f"{video['samples']} samples · {video['frames_kept']} / {video['frames_decoded']} frames kept · "
            f"{per_minute} samples/min over {video['duration_s']:.1f} s")


def _timeline(timeline: list, fps_out: float) -> str:
    """An SVG bar in frame units (viewBox width = frames), one rect per stretch with a tooltip."""
    if not timeline:
        return '<p class="muted">no frames decoded</p>'
    total_frames = max(end for _, end, _ in timeline)
    rects, frames_by_label = [], {}
    for first, end, label in timeline:
        frames_by_label[label] = frames_by_label.get(label, 0) + end - first
        seconds = f" ({first / fps_out:.1f}–{end / fps_out:.1f} s)" if fps_out > 0 else ""
        tip = f"{label}: frames {first}–{end - 1}{seconds}"
        rects.append(f'<rect x="{first}" y="0" width="{end - first}" height="1" '
                     f'fill="{LABEL_COLOURS[label]}"><title>{_esc(tip)}</title></rect>')
    legend = "".join(_swatch(LABEL_COLOURS[label], f"{label} {frames} frames")
                     for label, frames in frames_by_label.items())
    return (f'<svg class="bar" viewBox="0 0 {total_frames} 1" preserveAspectRatio="none" role="img">'
            f'{"".join(rects)}</svg><div class="legend">{legend}</div>')


def _preview(video: dict) -> str:
    """The frame before any crop, with the kept box and the static regions drawn over it in SVG."""
    jpeg = video["preview"]
    image = cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_GRAYSCALE) if jpeg else None
    if image is None:
        return '<p class="muted">no preview frame</p>'
    height_px, width_px = image.shape
    shapes = []
    if video["crop_box"]:
        x, y, w, h = video["crop_box"]
        shapes.append(f'<path fill="#000" fill-opacity="0.45" fill-rule="evenodd" '
                      f'd="M0 0H{width_px}V{height_px}H0Z M{x} {y}h{w}v{h}h{-w}Z"/>'
                      f'<rect x="{x}" y="{y}" width="{w}" height="{h}" fill="none" stroke="{CROP_COLOUR}" '
                      f'stroke-width="2"><title>kept: {x},{y} {w}×{h} px</title></rect>')
    for region in video["static_regions"]:
        x, y, w, h = region["box"]
        kind = _esc(region["kind"])
        shapes.append(f'<rect x="{x}" y="{y}" width="{w}" height="{h}" fill="{REGION_COLOUR}" '
                      f'fill-opacity="0.2" stroke="{REGION_COLOUR}" stroke-width="2" stroke-dasharray="6 3">'
                      f'<title>{kind}: {x},{y} {w}×{h} px</title></rect>'
                      f'<text x="{x + 3}" y="{y + 13}" font-size="12" fill="{REGION_COLOUR}">{kind}</text>')
    legend = ((_swatch(CROP_COLOUR, "kept (crop box)") if video["crop_box"] else "")
              + (_swatch(REGION_COLOUR, "static region") if video["static_regions"] else ""))
    return (f'<svg class="preview" width="{width_px}" height="{height_px}" '
            f'viewBox="0 0 {width_px} {height_px}" role="img">'
            f'<image href="{_jpeg_uri(jpeg)}" width="{width_px}" height="{height_px}"/>{"".join(shapes)}</svg>'
            f'<div class="legend">{legend}</div>')


def _video_section(video: dict) -> str:
    status = video["status"]
    reason = f'<span class="muted">{_esc(video["reason"])}</span>' if video["reason"] else ""
    duplicate = (f'<p>copy of <b>{_esc(video["duplicate_of"])}</b></p>' if video["duplicate_of"] else "")
    thumbs = "".join(f'<img src="{_jpeg_uri(jpeg)}" alt="kept frame">' for jpeg in video["thumbnails"])
    return (f'<section id="{_esc(video["video_id"])}"><div class="head"><h2>{_esc(video["video_id"])}</h2>'
            f'<span class="badge" style="background:{STATUS_COLOURS[status]}">{_esc(status)}</span>{reason}</div>'
            f'<div>{_source_link(video["source"])}</div>{duplicate}<p>{_esc(_yield_line(video))}</p>'
            f'{f"<div class=thumbs>{thumbs}</div>" if thumbs else ""}'
            f'{_timeline(video["timeline"], video["fps_out"])}{_preview(video)}</section>')


def render_report(videos: list[dict], totals: dict, title: str) -> str:
    """The whole report.html document: totals, then one section per video in the order given.

    Each video: video_id, source, status (a `STATUS_COLOURS` key), reason, frames_decoded, frames_kept,
    samples, duration_s, fps_out (frames/s decoded), timeline ([first_frame, end_frame_exclusive, label]
    in order, label a `LABEL_COLOURS` key), thumbnails (JPEG bytes, shown at their own size), preview
    (JPEG bytes at the working size before any crop, or None), crop_box and static_regions[i]["box"]
    ([x, y, w, h] in preview pixels), duplicate_of. Totals: videos, videos_with_samples, samples,
    source_minutes, samples_per_minute, frames_decoded, frames_kept, dropped {reason: frames},
    by_status {status: count}.
    """
    body = "".join(_video_section(video) for video in videos)
    return (f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
            f'<meta http-equiv="Content-Security-Policy" content="{_CSP}">'
            f'<meta name="viewport" content="width=device-width, initial-scale=1">'
            f'<title>{_esc(title)}</title><style>{_STYLE}</style></head>'
            f'<body><h1>{_esc(title)}</h1>{_totals_table(totals)}{body}</body></html>\n')
