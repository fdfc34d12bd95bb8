"""facegen studio: `python app.py [--checkpoints DIR] [--host H] [--port P]`.

Loads every checkpoint under the folder (a broken one is reported and skipped), then serves the
Gradio page. No network calls: analytics are off and nothing is downloaded.
"""

from __future__ import annotations

import argparse
import errno
import logging
import os
import socket
import sys
from pathlib import Path

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("HF_HUB_OFFLINE", "1")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--checkpoints", type=Path, default=Path("checkpoints"), help="folder of checkpoint folders")
    p.add_argument("--host", default=os.environ.get("GRADIO_SERVER_NAME", "127.0.0.1"), help="bind address")
    p.add_argument("--port", type=int, default=int(os.environ.get("GRADIO_SERVER_PORT", "7860")), help="port")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"], help="where models run")
    p.add_argument("--max-faces", type=int, default=8, help="faces per request (1-8)")
    p.add_argument("--max-steps", type=int, default=500, help="sampler steps per request")
    p.add_argument("--concurrency", type=int, default=None, help="jobs sampled at once (default: 1 on CPU, 2 on GPU)")
    return p.parse_args(argv)


def port_free(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind((host, port))
        except OSError as err:
            return err.errno not in (errno.EADDRINUSE, errno.EACCES)
    return True


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if not 1 <= args.port <= 65535:
        print(f"error: --port {args.port} is not a TCP port", file=sys.stderr)
        return 2
    if not port_free(args.host, args.port):
        print(f"error: port {args.port} on {args.host} is already in use; pick another with --port", file=sys.stderr)
        return 1
    import torch

    from facegen.runtime import set_cpu_threads
    from facegen.studio import Limits, Studio, load_group_classifier, load_models
    from facegen.ui import launch

    set_cpu_threads()
    models, failures = load_models(args.checkpoints, args.device)
    if not models:
        logging.warning("no checkpoint could be loaded from %s: %s", args.checkpoints, failures or "folder is empty")
    gpu = torch.cuda.is_available() and args.device != "cpu"
    limits = Limits(
        max_faces=max(1, min(args.max_faces, 8)),
        max_steps=args.max_steps,
        concurrency=args.concurrency or (2 if gpu else 1),
    )
    try:
        studio = Studio(models, failures, limits, load_group_classifier(args.checkpoints))
    except OSError as err:
        print(
            f"error: cannot create a folder for results ({err}); is the file system read-only? "
            "Set TMPDIR to a writable folder.",
            file=sys.stderr,
        )
        return 1
    print(
        f"facegen studio on http://{args.host}:{args.port} with {len(models)} model(s): {', '.join(models) or 'none'}",
        flush=True,
    )
    launch(studio, args.host, args.port)
    return 0


if __name__ == "__main__":
    sys.exit(main())
