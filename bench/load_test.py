"""Load, cross-talk, memory and cancel storms against the real app on loopback.

Starts `app.py` on 127.0.0.1 (a free port), then:
  1. N = 1, 4, 16 concurrent gradio_client sessions, each a different seed and mix, half streaming:
     completed/failed, p50/p95 latency, and every face compared pixel for pixel with the same seed and
     mix generated alone in this process (no cross-talk);
  2. 200 sequential requests: the app's memory before and after;
  3. a cancel storm: 16 clients start streams and cancel at random steps; the app must answer a fresh
     request right after, and its memory must return near the baseline.
Every loop is bounded in count and time, and traffic goes only to 127.0.0.1.

    python bench/load_test.py [--checkpoints checkpoints] [--model ddpm] [--requests 200]
"""

from __future__ import annotations

import argparse
import os
import random
import socket
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

import psutil
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from facegen.pipeline import FaceGenerator  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
MAX_SLIDERS = 8


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_app(checkpoints: Path, port: int, threads: str) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": threads, "GRADIO_ANALYTICS_ENABLED": "False"}
    proc = subprocess.Popen(
        [sys.executable, "app.py", "--checkpoints", str(checkpoints), "--port", str(port)],
        cwd=REPO,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.time() + 180
    while time.time() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return proc
        time.sleep(0.5)
    proc.kill()
    raise SystemExit("the app did not start within 180 s")


def rss_mb(proc: subprocess.Popen) -> float:
    p = psutil.Process(proc.pid)
    return (p.memory_info().rss + sum(c.memory_info().rss for c in p.children(recursive=True))) / 2**20


def request_args(model: str, sampler: str, steps: int, seed: int, mix: list[float]) -> list:
    return [model, sampler, steps, seed, 1, 1.0, "x0", *mix, *[0.0] * (MAX_SLIDERS - len(mix))]


def png_path(files) -> str:
    item = files[0]
    return item if isinstance(item, str) else item["path"] if isinstance(item, dict) else str(item)


def one_request(url: str, args: list, stream: bool, results: list, timeout: float) -> None:
    from gradio_client import Client

    t0 = time.perf_counter()
    try:
        client = Client(url, verbose=False)
        if stream:
            job = client.submit(*args, api_name="/generate")
            frames = sum(1 for _ in job)
            out = job.outputs()[-1]
        else:
            out, frames = client.predict(*args, api_name="/generate"), 1
        results.append(
            {"ok": True, "latency": time.perf_counter() - t0, "png": png_path(out[2]), "args": args, "frames": frames}
        )
    except Exception as err:  # a failure is counted and shown, never hidden
        results.append({"ok": False, "latency": time.perf_counter() - t0, "error": repr(err)[:200], "args": args})


def concurrent_round(
    url: str, n: int, model: str, sampler: str, steps: int, k: int, rng: random.Random, timeout: float
) -> list[dict]:
    results: list[dict] = []
    threads = []
    for i in range(n):
        mix = [rng.random() for _ in range(k)]
        args = request_args(model, sampler, steps, rng.randrange(2**31), mix)
        t = threading.Thread(target=one_request, args=(url, args, i % 2 == 0, results, timeout), daemon=True)
        threads.append(t)
        t.start()
    for t in threads:
        t.join(timeout)
    return results


def cross_talk(results: list[dict], gen: FaceGenerator, k: int) -> int:
    """How many responses differ from the same seed and mix generated alone here (must be 0)."""
    bad = 0
    for r in results:
        if not r["ok"]:
            continue
        model, sampler, steps, seed, _, guidance = r["args"][:6]
        mix = r["args"][7 : 7 + k]
        alone = gen.generate([seed], mix, None if gen.one_pass else sampler, steps, guidance)[0]
        bad += Image.open(r["png"]).convert("RGB").tobytes() != alone.tobytes()
    return bad


def cancel_storm(url: str, model: str, k: int, clients: int, rng: random.Random) -> int:
    from gradio_client import Client

    cancelled = 0
    jobs = []
    for _ in range(clients):
        client = Client(url, verbose=False)
        jobs.append(
            client.submit(*request_args(model, "ancestral", 500, rng.randrange(2**31), [1.0] * k), api_name="/generate")
        )
    time.sleep(1.0)
    for job in jobs:
        time.sleep(rng.uniform(0, 0.3))
        job.cancel()
        cancelled += 1
    return cancelled


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoints", type=Path, default=REPO / "checkpoints")
    p.add_argument("--model", default="ddpm")
    p.add_argument("--sampler", default="ddim")
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--requests", type=int, default=200, help="sequential requests for the memory check")
    p.add_argument("--threads", default="1", help="OMP threads of the app and of this process")
    p.add_argument("--timeout", type=float, default=600)
    p.add_argument("--max-growth-mb", type=float, default=64, help="allowed RSS growth over the sequential requests")
    a = p.parse_args()
    import torch

    torch.set_num_threads(int(a.threads))
    gen = FaceGenerator.from_checkpoint(a.checkpoints / a.model, device="cpu")
    k = len(gen.groups)
    port = free_port()
    url = f"http://127.0.0.1:{port}/"
    app = start_app(a.checkpoints, port, a.threads)
    rng = random.Random(0)
    problems = 0
    try:
        time.sleep(2)
        base = rss_mb(app)
        print(f"app on {url}; model {a.model}, {a.sampler} {a.steps} steps; baseline RSS {base:.0f} MB")
        print(
            f"{'N':>3} {'done':>5} {'failed':>6} {'p50 s':>7} {'p95 s':>7} {'streamed frames':>15} {'cross-talk':>10} {'RSS MB':>7}"
        )
        for n in (1, 4, 16):
            res = concurrent_round(url, n, a.model, a.sampler, a.steps, k, rng, a.timeout)
            ok = [r for r in res if r["ok"]]
            lat = sorted(r["latency"] for r in ok) or [float("nan")]
            p95 = lat[min(len(lat) - 1, int(0.95 * len(lat)))]
            frames = sum(r["frames"] for r in ok if r["frames"] > 1)
            cross_talk_count = cross_talk(res, gen, k)
            print(
                f"{n:>3} {len(ok):>5} {n - len(ok):>6} {statistics.median(lat):>7.2f} {p95:>7.2f} {frames:>15} "
                f"{cross_talk_count:>10} {rss_mb(app):>7.0f}",
                flush=True,
            )
            problems += (n - len(ok)) + cross_talk_count
            for r in res:
                if not r["ok"]:
                    print("   failed:", r["error"])
        before = rss_mb(app)
        t0 = time.perf_counter()
        failures = 0
        for i in range(a.requests):
            res: list[dict] = []
            one_request(
                url,
                request_args(
                    "dcgan" if (a.checkpoints / "dcgan").is_dir() else a.model, a.sampler, a.steps, i, [1.0] * k
                ),
                False,
                res,
                a.timeout,
            )
            failures += not res[0]["ok"]
        after = rss_mb(app)
        verdict = "within" if after - before <= a.max_growth_mb else "OVER"
        print(
            f"{a.requests} sequential requests in {time.perf_counter() - t0:.0f} s, {failures} failed: "
            f"RSS {before:.0f} -> {after:.0f} MB ({after - before:+.0f} MB, {verdict} the {a.max_growth_mb:.0f} MB bound)"
        )
        problems += failures + (verdict == "OVER")
        storm_base = rss_mb(app)
        n_cancel = cancel_storm(url, a.model, k, 16, rng)
        t0 = time.perf_counter()
        res = []
        one_request(url, request_args(a.model, a.sampler, a.steps, 1, [1.0] * k), False, res, a.timeout)
        latency = time.perf_counter() - t0
        cpu = psutil.Process(app.pid).cpu_percent(interval=3.0)  # no sampler may still run for a cancelled stream
        print(
            f"cancel storm: {n_cancel} streams cancelled; next request {'ok' if res[0]['ok'] else 'FAILED'} after "
            f"{latency:.1f} s; RSS {storm_base:.0f} -> {rss_mb(app):.0f} MB; app CPU while idle afterwards: {cpu:.0f}%"
        )
        problems += (not res[0]["ok"]) + (cpu > 50)
    finally:
        app.terminate()
        app.wait(timeout=30)
    print("PASS" if problems == 0 else f"FAIL: {problems} problem(s)")
    sys.exit(1 if problems else 0)


if __name__ == "__main__":
    main()
