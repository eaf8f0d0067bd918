"""Load test of the studio (a script, not a unit test).

    python bench/load_test.py [--clients 8] [--duration 60] [--checkpoints checkpoints] [--json out.json]

Starts `python app.py` on 127.0.0.1 (a free port; loopback traffic only), then runs N gradio_client clients
in parallel threads, each calling /generate (4x8 grid), /interpolate (16 frames + GIF) and /morph (16 frames
+ GIF) in turn with random seeds and classes, downloading every file it gets, for a bounded time. Reports
requests served, errors (must be 0), p50/p95/max latency per endpoint, throughput, a small request's
latency alone and while a heavy all-class animation runs (the animation lane), and the server's peak
memory (VmHWM from /proc; psutil's RSS, sampled, where /proc is missing). Afterwards it checks that the app
still answers promptly, and stops it with SIGTERM as docker/Spaces would. Exit status 1 on any error.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def memory_kib(pid: int) -> tuple[int | None, int | None]:
    """(current RSS, peak RSS) of ``pid`` in KiB: /proc/PID/status on Linux, else psutil (no peak there)."""
    status = Path(f"/proc/{pid}/status")
    if status.exists():
        fields = dict(line.split(":", 1) for line in status.read_text().splitlines() if ":" in line)
        kib = lambda key: int(fields[key].split()[0]) if key in fields else None  # noqa: E731
        return kib("VmRSS"), kib("VmHWM")
    try:
        import psutil

        return psutil.Process(pid).memory_info().rss // 1024, None
    except Exception:
        return None, None


def cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def wait_for_page(url: str, proc: subprocess.Popen, timeout: float = 120) -> float:
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < timeout:
        if proc.poll() is not None:
            raise SystemExit(f"app.py exited with {proc.returncode} before serving")
        try:
            urllib.request.urlopen(url, timeout=5).read()
            return time.perf_counter() - t0
        except OSError:
            time.sleep(0.2)
    raise SystemExit(f"app.py did not serve {url} within {timeout} s")


def lane_check(url: str, datasets: dict, repeats: int = 5) -> dict | None:
    """A small request (a 2x2 grid) alone, and while a heavy one runs (every class of the dataset with the
    most classes, 48 interpolation frames): its latency in both cases, median of ``repeats``. Heavy
    animations have their own lane, so the second should stay close to the first."""
    from gradio_client import Client
    from gradio_client.utils import Status

    heavy_ds = max(datasets, key=lambda d: len(datasets[d]["classes"]))
    if len(datasets[heavy_ds]["classes"]) > 64:
        return None
    small_ds = next(iter(datasets))
    small_cls = datasets[small_ds]["classes"][0]
    small_c, heavy_c = Client(url, verbose=False, download_files=False), Client(url, verbose=False, download_files=False)

    def small() -> float:
        t = time.perf_counter()
        small_c.predict(small_ds, small_cls, random.randrange(2**31), 2, 2, 1.0, 1, api_name="/generate")
        return time.perf_counter() - t

    alone = [small() for _ in range(repeats)]
    during, heavy_s = [], []
    for _ in range(repeats):
        t = time.perf_counter()
        job = heavy_c.submit(heavy_ds, "All classes", random.randrange(2**31), 1, 48, "spherical", 1.0, 1,
                             api_name="/interpolate")
        while job.status().code != Status.PROCESSING and not job.done():
            time.sleep(0.01)
        during.append(small())
        job.result()
        heavy_s.append(time.perf_counter() - t)
    return {"small": f"{small_ds} {small_cls!r} 2x2 grid", "heavy": f"{heavy_ds} all classes, 48 frames",
            "small_alone_p50_ms": round(pct(alone, 50), 1), "small_during_heavy_p50_ms": round(pct(during, 50), 1),
            "heavy_p50_ms": round(pct(heavy_s, 50), 1)}


def pct(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values) * 1000, q)) if values else float("nan")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoints", default=os.environ.get("CGAN_CHECKPOINTS") or str(REPO / "checkpoints"))
    p.add_argument("--clients", type=int, default=8, help="concurrent clients (default 8)")
    p.add_argument("--duration", type=float, default=60, help="seconds of load (default 60)")
    p.add_argument("--threads", type=int, default=None, help="torch threads of the app (default: its own choice)")
    p.add_argument("--json", default=None, help="also write the results here")
    args = p.parse_args()

    from gradio_client import Client

    port = free_port()
    url = f"http://127.0.0.1:{port}/"
    private = Path(tempfile.mkdtemp(prefix="cgan-load-"))
    env = dict(os.environ, CGAN_CHECKPOINTS=args.checkpoints, GRADIO_SERVER_NAME="127.0.0.1",
               GRADIO_SERVER_PORT=str(port), GRADIO_ANALYTICS_ENABLED="False", TMPDIR=str(private),
               GRADIO_TEMP_DIR=str(private / "gradio"))
    cmd = [sys.executable, "app.py"] + (["--threads", str(args.threads)] if args.threads else [])
    server_log = open(private / "server.log", "w")
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=server_log, stderr=subprocess.STDOUT)
    ok = False
    try:
        startup = wait_for_page(url, proc)
        probe = Client(url, verbose=False, download_files=False)
        datasets = probe.predict(api_name="/datasets")
        if not datasets:
            raise SystemExit(f"no checkpoints in {args.checkpoints}")
        idle_rss, _ = memory_kib(proc.pid)
        print(f"app.py on {url} (pid {proc.pid}) served its first page after {startup:.1f} s; datasets: "
              f"{', '.join(datasets)}; {args.clients} clients for {args.duration:.0f} s", file=sys.stderr)

        def request(kind: str, rng: random.Random):
            name = rng.choice(list(datasets))
            classes = datasets[name]["classes"]
            seed = rng.randrange(2**31)
            if kind == "/generate":
                cls = rng.choice(classes + ["All classes"])
                return dict(dataset=name, class_name=cls, seed=seed, rows=4, cols=8, truncation=1.0, scale=3)
            if kind == "/interpolate":
                return dict(dataset=name, class_name=rng.choice(classes), seed_a=seed, seed_b=seed + 1, frames=16,
                            method=rng.choice(["spherical", "linear"]), truncation=1.0, scale=3)
            a, b = rng.sample(classes, 2)
            return dict(dataset=name, class_a=a, class_b=b, seed=seed, frames=16, truncation=1.0, scale=3)

        results: list[tuple[str, float, str | None]] = []
        lock = threading.Lock()
        start_barrier = threading.Barrier(args.clients + 1)
        deadline = [0.0]

        def client_loop(i: int):
            rng = random.Random(i)
            folder = private / f"client-{i}"
            folder.mkdir()
            c = Client(url, verbose=False, download_files=str(folder))
            kinds = ["/generate", "/interpolate", "/morph"]
            start_barrier.wait()
            j = i
            while time.perf_counter() < deadline[0]:
                kind = kinds[j % 3]
                j += 1
                t = time.perf_counter()
                error = None
                try:
                    out = c.predict(**request(kind, rng), api_name=kind)
                    files = [out[0]] + ([out[1]] if kind != "/generate" else [])
                    if not all(Path(f).is_file() and Path(f).stat().st_size > 0 for f in files):
                        error = f"missing output file in {out!r}"
                    for f in files:
                        Path(f).unlink(missing_ok=True)
                except Exception as e:  # counted and reported, never hidden
                    error = f"{type(e).__name__}: {e}"
                with lock:
                    results.append((kind, time.perf_counter() - t, error))

        peak_sampled = [0]
        stop_sampling = threading.Event()

        def sample_memory():
            while not stop_sampling.wait(0.25):
                rss, _ = memory_kib(proc.pid)
                peak_sampled[0] = max(peak_sampled[0], rss or 0)

        threads = [threading.Thread(target=client_loop, args=(i,), daemon=True) for i in range(args.clients)]
        for t in threads:
            t.start()
        sampler = threading.Thread(target=sample_memory, daemon=True)
        sampler.start()
        deadline[0] = time.perf_counter() + args.duration
        t0 = time.perf_counter()
        start_barrier.wait()
        for t in threads:
            t.join(timeout=args.duration + 300)
        wall = time.perf_counter() - t0
        stop_sampling.set()
        stuck = sum(t.is_alive() for t in threads)
        rss_after, hwm = memory_kib(proc.pid)

        # still responsive afterwards?
        t = time.perf_counter()
        fresh = Client(url, verbose=False, download_files=str(private))
        alive = bool(fresh.predict(api_name="/datasets"))
        name = next(iter(datasets))
        png = fresh.predict(name, "All classes", 1, 4, 8, 1.0, 3, api_name="/generate")[0]
        after_s = time.perf_counter() - t
        page_ok = urllib.request.urlopen(url, timeout=10).status == 200
        responsive = alive and Path(png).is_file() and page_ok and after_s < 30

        lanes = lane_check(url, datasets)
        errors = [r for r in results if r[2]]
        report = {
            "date": time.strftime("%Y-%m-%d"), "machine": f"{platform.machine()}, {cores()} cores",
            "clients": args.clients, "duration_s": round(wall, 1), "requests": len(results),
            "errors": len(errors), "throughput_per_s": round(len(results) / wall, 2),
            "latency_ms": {}, "server_rss_idle_mib": round((idle_rss or 0) / 1024, 1),
            "server_rss_peak_mib": round((hwm or peak_sampled[0]) / 1024, 1),
            "server_rss_peak_source": "VmHWM" if hwm else "sampled RSS",
            "server_rss_after_mib": round((rss_after or 0) / 1024, 1),
            "responsive_after": responsive, "check_after_s": round(after_s, 2), "stuck_clients": stuck,
            "lanes": lanes,
        }
        for kind in ("/generate", "/interpolate", "/morph", "all"):
            times = [r[1] for r in results if (kind == "all" or r[0] == kind) and not r[2]]
            report["latency_ms"][kind] = {"n": len(times), "p50": round(pct(times, 50), 1),
                                          "p95": round(pct(times, 95), 1), "max": round(pct(times, 100), 1)}
        print(f"\nrequests served: {len(results) - len(errors)} of {len(results)} in {wall:.1f} s "
              f"({report['throughput_per_s']}/s), errors: {len(errors)}")
        print(f"{'endpoint':<14}{'n':>6}{'p50 ms':>10}{'p95 ms':>10}{'max ms':>10}")
        for kind, v in report["latency_ms"].items():
            print(f"{kind:<14}{v['n']:>6}{v['p50']:>10.0f}{v['p95']:>10.0f}{v['max']:>10.0f}")
        print(f"server memory: idle {report['server_rss_idle_mib']} MiB, peak {report['server_rss_peak_mib']} MiB "
              f"({report['server_rss_peak_source']}), after {report['server_rss_after_mib']} MiB")
        print(f"responsive afterwards: {responsive} (datasets + a 4x8 grid + the page in {after_s:.2f} s)")
        if lanes:
            print(f"lanes: {lanes['small']}: {lanes['small_alone_p50_ms']:.0f} ms alone, "
                  f"{lanes['small_during_heavy_p50_ms']:.0f} ms while {lanes['heavy']} runs "
                  f"({lanes['heavy_p50_ms']:.0f} ms)")
        for e in errors[:5]:
            print("error:", e[0], e[2][:300])
        if args.json:
            Path(args.json).write_text(json.dumps(report, indent=2))
        ok = not errors and responsive and not stuck and len(results) > 0
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        server_log.close()
    print(f"app.py stopped with exit code {proc.returncode} after SIGTERM")
    shutil.rmtree(private, ignore_errors=True)
    return 0 if ok and proc.returncode == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
