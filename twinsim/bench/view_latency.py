"""``twinsim bench view``: the web view's twin-to-browser latency and update rate, every layer on.

A rehearsal's recorded timeline is fed to the view's live path (as a recorder feeds it) at a set rate of wall time,
from where the first guide starts to move. Two clients, one run each:

- ``wire``: a scripted client speaking viser's websocket protocol as the web page does, decoding every message:
  when each new "twin as of" line (the view writes one with every draw, after the scene's messages) arrives.
  That is the view and the wire, without a browser's rendering.
- ``chromium``: a headless Chromium loads the page; a MutationObserver in it stamps each new "twin as of" line
  when the page shows it, and "shown" adds the browser's next animation frame (when the three.js scene drawn
  from the same messages is painted).

The latency of a sample is the client's clock when its line arrived minus the view's clock when the twin learnt
of the sample (one machine, one clock, loopback). The rate is the distinct samples the client received per
second. On a machine without a GPU the browser renders WebGL in software, on the same cores as the view and the
feed: its figures then measure that renderer, not the view.
"""

from __future__ import annotations

import platform
import re
import statistics
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

from twinsim.bench.peers import free_port
from twinsim.report import table, write_json
from twinsim.view.timeline import Timeline, load_timeline

OBSERVER_JS = r"""
window.__seen = [];
const re = /twin as of (\d\d):(\d\d):(\d\d)\.(\d\d\d) UTC, sample (\d+)/;
let last = '';
new MutationObserver((muts) => {
  for (const m of muts) {
    const x = (m.target.textContent || '').match(re);
    if (!x || x[0] === last) continue;
    last = x[0];
    const now = Date.now(), d = new Date(now);
    const rec = [now, Date.UTC(d.getUTCFullYear(), d.getUTCMonth(), d.getUTCDate(), +x[1], +x[2], +x[3], +x[4]), +x[5], 0];
    window.__seen.push(rec);
    requestAnimationFrame(() => { rec[3] = Date.now(); });
  }
}).observe(document.body, {subtree: true, childList: true, characterData: true});
"""


class TimelineFeed:
    """A recorded timeline told to listeners sample by sample, as a live recorder tells a view."""

    def __init__(self, recorded: Timeline, start: int) -> None:
        self.recorded, self.start = recorded, start
        self.timeline = Timeline(list(recorded.tools), recorded.rate_hz, recorded.rig, events=list(recorded.events),
                                 layers=dict(recorded.layers))
        self.listeners: list[Any] = []
        for k in range(start):
            self._add(k)

    def _add(self, k: int) -> None:
        r = self.recorded
        self.timeline.add_sample(r.t_s[k], r.q_rad[k], r.T_ref_tools_mm[k], r.T_cam_ref_mm[k])

    def run(self, rate_hz: float, seconds: float) -> int:
        """Feed samples at ``rate_hz`` of wall time for ``seconds``; the number fed."""
        n = min(int(rate_hz * seconds), len(self.recorded) - self.start)
        t0 = time.perf_counter()
        for i in range(n):
            k = self.start + i
            self._add(k)
            for listener in list(self.listeners):
                listener("sample", k)
            time.sleep(max(0.0, t0 + (i + 1) / rate_hz - time.perf_counter()))
        return n


class WireClient:
    """viser's websocket protocol as the web page speaks it: its camera first (the server counts a client from it),
    then every message decoded; the arrival of each new "twin as of" line is kept in ``seen``."""

    def __init__(self, url: str) -> None:
        import msgspec
        import viser
        from websockets.sync.client import connect

        self.seen: list[list[float]] = []
        self._encode = msgspec.msgpack.encode
        self._ws = connect(url.replace("http", "ws"), subprotocols=[f"viser-v{viser.__version__}"], max_size=None)
        self.send(type="ViewerCameraMessage", wxyz=[1.0, 0.0, 0.0, 0.0], position=[1.0, 0.0, 1.0], fov=0.87, near=0.01,
                  far=100.0, image_height=800, image_width=1280, look_at=[0.0, 0.0, 0.0], up_direction=[0.0, 0.0, 1.0])
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        import msgspec
        import zstandard

        unzip = zstandard.ZstdDecompressor()
        last = ""
        try:
            while True:
                raw = self._ws.recv()
                now_ms = time.time() * 1000.0
                size, n = int.from_bytes(raw[:8], "little"), int.from_bytes(raw[8:16], "little")
                batch = msgspec.msgpack.decode(unzip.decompress(raw[16:16 + n], max_output_size=size))
                for m in batch["messages"]:
                    text = m.get("updates", {}).get("_markdown") if m.get("type") == "GuiUpdateMessage" else None
                    x = STAMP.search(text) if isinstance(text, str) else None
                    if x and x.group(0) != last:
                        last = x.group(0)
                        self.seen.append([now_ms, _stamp_ms(x, now_ms), float(x.group(5)), 0.0])
        except Exception:  # noqa: BLE001 (the connection closed)
            return

    def send(self, **message: Any) -> None:
        """One client-to-server message of viser's protocol (its ``type`` and fields, plain Python values)."""
        self._ws.send(self._encode(message))

    def close(self) -> None:
        self._ws.close()


STAMP = re.compile(r"twin as of (\d\d):(\d\d):(\d\d)\.(\d\d\d) UTC, sample (\d+)")


def _stamp_ms(x: re.Match[str], near_ms: float) -> float:
    """The stamp's time of day (UTC) on the day of ``near_ms`` (ms since the epoch)."""
    day = np.floor(near_ms / 86_400_000.0) * 86_400_000.0
    return day + ((int(x.group(1)) * 60 + int(x.group(2))) * 60 + int(x.group(3))) * 1000.0 + int(x.group(4))


def measure(recorded: Timeline, rate_hz: float, seconds: float, browser: Any | None, settle_s: float = 1.0) -> dict[str, Any]:
    """One feed at ``rate_hz`` into a new view, loaded in ``browser`` (a selenium driver), or by a :class:`WireClient`
    when it is None; the figures of the samples the client received."""
    from twinsim.view.web_view import TwinView

    start = next((e.sample for e in recorded.events if e.step.startswith("guide") and e.state == "running"), 0)
    feed = TimelineFeed(recorded, start)
    view = TwinView(port=free_port(), max_rate_hz=max(rate_hz, 30.0))
    draws: list[float] = []
    wire: WireClient | None = None
    try:
        view.follow(feed)
        view.show(len(feed.timeline) - 1)
        view.on_show.append(lambda _tl, _k: draws.append(time.perf_counter()))
        if browser is None:
            wire = WireClient(view.url)
            time.sleep(2.0)  # the scene's backlog received
        else:
            browser.get(view.url)
            deadline = time.monotonic() + 60.0
            while not browser.execute_script("return document.body.innerText.includes('twin as of');"):
                if time.monotonic() > deadline:
                    raise RuntimeError("the page did not show the twin within 60 s")
                time.sleep(0.2)
            time.sleep(5.0)  # the scene built and faded in
            browser.execute_script(OBSERVER_JS)
        draws.clear()
        if wire is not None:
            wire.seen.clear()
        t0 = time.perf_counter()
        fed = feed.run(rate_hz, seconds)
        fed_s = time.perf_counter() - t0
        time.sleep(settle_s)
        seen = list(wire.seen) if wire is not None else browser.execute_script("return window.__seen;")
    finally:
        if wire is not None:
            wire.close()
        view.close()
    arr = np.array(seen, dtype=np.float64).reshape(-1, 4)
    arr = arr[arr[:, 2] > start]  # the fed samples only
    lat = arr[:, 0] - arr[:, 1]
    shown = arr[arr[:, 3] > 0, 3] - arr[arr[:, 3] > 0, 1]
    span_s = (arr[-1, 0] - arr[0, 0]) / 1000.0 if len(arr) > 1 else float("nan")
    return {"client": "wire" if browser is None else "chromium", "feed_hz": rate_hz, "fed": fed, "fed_s": fed_s, "view_draws": len(draws),
            "view_draw_hz": len(draws) / fed_s, "client_samples": len(arr),
            "client_hz": (len(arr) - 1) / span_s if len(arr) > 1 else 0.0,
            "latency_ms_median": float(np.median(lat)) if len(lat) else None,
            "latency_ms_p90": float(np.percentile(lat, 90)) if len(lat) else None,
            "shown_ms_median": float(np.median(shown)) if len(shown) else None,
            "shown_ms_p90": float(np.percentile(shown, 90)) if len(shown) else None}


def main(replay: Path, out: Path, rates_hz: list[float], seconds: float, repeats: int, clients: list[str]) -> int:
    """Each client at each rate, ``repeats`` times (interleaved, so that load on the machine hits all alike)."""
    from twinsim.view.browser import headless_chromium

    recorded = load_timeline(replay)
    browser = headless_chromium() if "chromium" in clients else None
    runs: list[dict[str, Any]] = []
    try:
        for rep in range(repeats):
            for client in clients:
                for rate in rates_hz:
                    r = measure(recorded, rate, seconds, browser if client == "chromium" else None)
                    runs.append({"repeat": rep, **r})
                    print(f"  {client}, feed {rate:g} Hz, repeat {rep + 1}: {r['client_hz']:.1f} updates/s, latency "
                          f"median {_fmt(r['latency_ms_median'])} ms", flush=True)
    finally:
        if browser is not None:
            browser.quit()
    rows, summary = [], []
    for client in clients:
        for rate in rates_hz:
            rs = [r for r in runs if r["feed_hz"] == rate and r["client"] == client]

            def med(key: str, rs: list[dict[str, Any]] = rs) -> float | None:
                vals = [r[key] for r in rs if r[key] is not None]
                return float(statistics.median(vals)) if vals else None

            s = {"client": client, "feed_hz": rate, "repeats": len(rs),
                 **{k: med(k) for k in ("view_draw_hz", "client_hz", "latency_ms_median", "latency_ms_p90",
                                        "shown_ms_median", "shown_ms_p90")}}
            summary.append(s)
            rows.append([client, f"{rate:g}", _fmt(s["view_draw_hz"]), _fmt(s["client_hz"]), _fmt(s["latency_ms_median"]),
                         _fmt(s["latency_ms_p90"]), _fmt(s["shown_ms_median"]), _fmt(s["shown_ms_p90"])])
    print(table(["client", "feed Hz", "view draws/s", "client updates/s", "latency median ms", "p90", "shown median ms",
                 "p90"], rows))
    print("latency: the twin learning of a sample to the client receiving its draw (one clock, loopback); shown: to the "
          "browser's next animation frame. Medians over repeats. wire: viser's protocol decoded by a script (the view "
          "and the wire); chromium: headless, WebGL in software on this machine's CPUs.")
    write_json(out, {"what": "twinsim bench view: twin-to-browser latency and update rate, every layer on",
                     "replay": str(replay), "seconds": seconds, "machine": platform.platform(),
                     "cpus": _cpus(), "summary": summary, "runs": runs})
    print(f"wrote {out}")
    return 0


def _fmt(x: float | None) -> str:
    return "-" if x is None else f"{x:.1f}"


def _cpus() -> int:
    import os

    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)

