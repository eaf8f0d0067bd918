"""cgan-studio web app: `python app.py` (also the Hugging Face Space entry point).

    python app.py                              # serves checkpoints/ on http://127.0.0.1:7860
    python app.py --checkpoints DIR            # or CGAN_CHECKPOINTS=DIR python app.py
    python app.py --checkpoints hf:user/repo,DIR   # Hub model repos and local folders, mixed
    GRADIO_SERVER_NAME=0.0.0.0 GRADIO_SERVER_PORT=8080 python app.py

Works offline on a plain CPU. Never opens a public share link.
"""
from __future__ import annotations

import argparse
import atexit
import os
import shutil
import signal
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="app.py",
                                description="cgan-studio: explore class-conditional GANs in the browser.")
    p.add_argument("--threads", type=int, default=None,
                   help="torch threads (default: the cores this process may use, os.sched_getaffinity)")
    p.add_argument("--checkpoints", default=os.environ.get("CGAN_CHECKPOINTS") or str(HERE / "checkpoints"),
                   help="folder holding one exported checkpoint folder per dataset, or several sources "
                        "separated by commas, each such a folder or a Hub model repo hf:USER/NAME "
                        "(default: $CGAN_CHECKPOINTS or checkpoints/ next to app.py)")
    p.add_argument("--data-dir", default=os.environ.get("CGAN_DATA_DIR"),
                   help="folder with the datasets' official files (one sub-folder per dataset, as in "
                        "../shared/data): the nearest-neighbour view then searches every training image, not "
                        "only the bundled sample (default: $CGAN_DATA_DIR)")
    p.add_argument("--runs", default=os.environ.get("CGAN_RUNS"),
                   help="folder of training runs to show live (default: $CGAN_RUNS, else runs/ when it exists)")
    p.add_argument("--allow-training", action="store_true",
                   help="add a Train tab that starts train.py on this machine (local use; off on a Space)")
    p.add_argument("--force-training-on-space", action="store_true",
                   help="allow --allow-training even on a hosted Space (SPACE_ID set)")
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # no network calls from a local app
    # Idle OpenMP workers sleep instead of spinning. Measured on 2 shared cores: a 10x10 grid took ~2 s
    # with spinning workers while another process was busy, ~70 ms with passive ones. Set before torch loads.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    local = [s.strip() for s in args.checkpoints.split(",") if s.strip() and not s.strip().startswith("hf:")]
    missing = [s for s in local if not Path(s).is_dir()]
    if missing:
        print(f"error: checkpoints folder {missing[0]} does not exist", file=sys.stderr)
        return 2
    runs = args.runs or ("runs" if Path("runs").is_dir() else None)
    private_gradio_cache()
    from cgan.launcher import Launcher, training_allowed
    from cgan.distributed import configure_torch
    from cgan.studio import Studio
    from cgan.ui import build, launch  # gradio and torch are imported here, once

    launcher, note = None, ""
    if args.allow_training:
        allowed, why = training_allowed(True, args.force_training_on_space)
        if not allowed:
            print(f"note: {why}", file=sys.stderr)
        else:
            runs = runs or "runs"
            Path(runs).mkdir(parents=True, exist_ok=True)
            launcher = Launcher(runs)
            atexit.register(launcher.close)
    configure_torch(args.threads)  # process-wide: torch's thread pool
    studio = Studio(args.checkpoints, data_dir=args.data_dir)
    demo = build(args.checkpoints, studio, runs_root=runs, launcher=launcher,
                 training_note=note)
    # SIGTERM (docker stop, Spaces restarts) shuts down like Ctrl-C: Gradio closes the server, then the
    # temporary files are removed at exit.
    signal.signal(signal.SIGTERM, _interrupt)
    _, url, _ = launch(demo, quiet=True, prevent_thread_lock=True)
    print(f"cgan-studio: serving on {url} (local only; no public link is ever opened)", file=sys.stderr, flush=True)
    try:
        demo.block_thread()
    except KeyboardInterrupt:
        demo.close()
    return 0


def private_gradio_cache() -> None:
    """Gradio keeps the files it serves in $GRADIO_TEMP_DIR, by default one folder shared by every Gradio
    app of the machine (/tmp/gradio), whose files any of them may serve. Give this process its own folder
    (mode 0700), removed at exit, unless the operator chose one. Must run before gradio is imported."""
    if not os.environ.get("GRADIO_TEMP_DIR"):
        folder = tempfile.mkdtemp(prefix="cgan-studio-gradio-")
        os.environ["GRADIO_TEMP_DIR"] = folder
        atexit.register(shutil.rmtree, folder, ignore_errors=True)


def _interrupt(signum, frame):
    raise KeyboardInterrupt


if __name__ == "__main__":
    sys.exit(main())
